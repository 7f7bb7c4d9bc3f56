"""The time, as the server sees it: one injectable source.

Code that decides by time (an expired certificate or token, a request's timestamp, a
cache entry's age, a session's end, a reservation left behind) asks the runtime's
:class:`Clock` instead of the system, so a test can move time forward instead of
sleeping until something expires. Measuring how long something took (``time.monotonic``)
is not deciding by time and stays with the system.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock", "unix_seconds"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    """The system's time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def unix_seconds(clock: Clock) -> int:
    """The clock's time in whole POSIX seconds (as JWT ``iat``/``exp`` carry it)."""
    return int(clock.now().timestamp())
