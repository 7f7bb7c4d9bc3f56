"""Rate limit on failed attestations, per source address and per claimed identity.

Kept in process memory: each node limits on its own, which bounds guessing per node
without a shared store. A success does not reset the counters (a guesser who also
holds one valid credential gains nothing).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from imprint.attestation.base import TooManyAttempts

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """Allow at most ``limit`` failures per key in any ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, *keys: str | None) -> None:
        """Raise when any key has used up its failures.

        Raises:
            TooManyAttempts: with the seconds until the oldest failure ages out.
        """
        now = time.monotonic()
        with self._lock:
            for key in keys:
                if key is None:
                    continue
                times = self._recent(key, now)
                if len(times) >= self.limit:
                    retry = max(1, int(times[0] + self.window - now) + 1)
                    raise TooManyAttempts(
                        "too many failed attempts; try again later", retry_after=retry
                    )

    def failure(self, *keys: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > self._max_keys:
                self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}
            for key in keys:
                if key is not None:
                    self._failures.setdefault(key, deque()).append(now)
