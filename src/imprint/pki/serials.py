"""Certificate serial numbers."""

from __future__ import annotations

import secrets

__all__ = ["random_serial", "serial_hex"]


def random_serial() -> int:
    """A positive serial carrying 128 random bits (RFC 5280 allows up to 20 octets).

    A fixed 129th bit keeps every serial the same length (17 octets in DER).
    """
    return (1 << 128) | secrets.randbits(128)


def serial_hex(serial: int) -> str:
    """The canonical text form: lowercase hex, no separators."""
    return format(serial, "x")
