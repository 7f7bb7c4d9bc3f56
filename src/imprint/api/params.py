"""Bounds shared by the routes' parameters, so that no input reaches the database out of
the range its columns hold (an out-of-range integer is a 400, never a 500)."""

from __future__ import annotations

__all__ = ["MAX_ROW_ID"]

#: Row ids (audit entries, channels, ...) are INTEGER columns: 32-bit on PostgreSQL.
MAX_ROW_ID = 2**31 - 1
