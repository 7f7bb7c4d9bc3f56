"""The time, as the server sees it: one injectable source.

Code that decides by time (an expired certificate, a request's timestamp, a
reservation left behind) asks the runtime's :class:`Clock` instead of the system, so a
test can move time forward instead of sleeping until something expires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    """The system's time."""

    def now(self) -> datetime:
        return datetime.now(UTC)
