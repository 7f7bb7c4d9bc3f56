"""Certificate serial numbers."""

from __future__ import annotations

import secrets

__all__ = ["normalize_serial", "random_serial", "serial_hex"]


def random_serial() -> int:
    """A positive serial carrying 128 random bits (RFC 5280 allows up to 20 octets).

    A fixed 129th bit keeps every serial the same length (17 octets in DER).
    """
    return (1 << 128) | secrets.randbits(128)


def serial_hex(serial: int) -> str:
    """The canonical text form: lowercase hex, no separators."""
    return format(serial, "x")


def normalize_serial(text: str) -> str:
    """Accept a serial as people paste it: any case, with colons or spaces, with the
    leading zero OpenSSL prints; return the canonical form.

    Raises:
        InvalidValue: not a hex serial.
    """
    from imprint.errors import InvalidValue

    cleaned = text.strip().replace(":", "").replace(" ", "").lower()
    if not cleaned or len(cleaned) > 42 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise InvalidValue(f"{text[:50]!r} is not a hexadecimal certificate serial")
    return cleaned.lstrip("0") or "0"
