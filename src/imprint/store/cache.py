"""A per-process cache for what every provisioning request reads but rarely changes.

Enrollments, the deny-list, manufacturer CRLs and client CAs are read by every
attestation and written by an administrator now and then. A :class:`ReadCache` keeps
answers for :data:`TTL_SECONDS` and forgets all of a kind at once when this process
writes that kind, through any store object on the same database. So:

- a change made through this process (API, console, a CLI command running in it) is
  seen by the next request;
- a change made by another process on the same database (another node, the CLI run
  next to a server) is seen within :data:`TTL_SECONDS`.

An answer read while a write of its kind was under way is not kept: each write bumps a
generation counter after it commits, and an answer is stored with the generation seen
before its query ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from sqlalchemy.engine import Engine

__all__ = ["TTL_SECONDS", "ReadCache"]

TTL_SECONDS = 2.0
_MAX_ENTRIES = 512  # per kind and database; past it the kind starts again empty

T = TypeVar("T")

_lock = threading.Lock()
_generations: dict[tuple[str, str], int] = {}


def _database(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


class ReadCache:
    """Cached reads of one kind of stored object (``kind``) on one database."""

    def __init__(self, engine: Engine, kind: str, ttl: float = TTL_SECONDS) -> None:
        self._slot = (_database(engine), kind)
        self._ttl = ttl
        self._entries: dict[Hashable, tuple[float, int, object]] = {}

    def _generation(self) -> int:
        return _generations.get(self._slot, 0)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached answer for ``key``, else ``load()`` (kept for the next caller)."""
        now = time.monotonic()
        generation = self._generation()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now and entry[1] == generation:
            return entry[2]  # type: ignore[return-value]
        value = load()
        with _lock:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now + self._ttl, generation, value)
        return value

    def changed(self) -> None:
        """Forget every answer of this kind in this process (call after a write commits)."""
        with _lock:
            _generations[self._slot] = _generations.get(self._slot, 0) + 1
