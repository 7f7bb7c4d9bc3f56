"""Bounds shared by the routes' parameters, so that no input reaches the database out of
the range its columns hold (an out-of-range integer is a 400, never a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

__all__ = ["MAX_ROW_ID", "Serial", "Sha256"]

#: Row ids (audit entries, channels, ...) are INTEGER columns: 32-bit on PostgreSQL.
MAX_ROW_ID = 2**31 - 1

#: A certificate serial: up to 42 hex digits, or hex pairs separated by colons or spaces
#: (as OpenSSL prints them).
Serial = Annotated[
    str, Path(pattern=r"^(?:[0-9A-Fa-f]{1,42}|(?:[0-9A-Fa-f]{2}[: ]){1,20}[0-9A-Fa-f]{2})$")
]

#: A SHA-256 fingerprint: 64 hex digits, the pairs optionally separated by colons or spaces.
Sha256 = Annotated[str, Path(pattern=r"^(?:[0-9A-Fa-f]{2}[: ]?){31}[0-9A-Fa-f]{2}$")]
