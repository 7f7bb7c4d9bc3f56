"""A per-process cache for what every provisioning request reads but rarely changes.

Enrollments, the deny-list, manufacturer CRLs and client CAs are read by every
attestation and written by an administrator now and then. A :class:`ReadCache` keeps
answers for :data:`TTL_SECONDS` and forgets all of a kind at once when this process
writes that kind, through any store object on the same database. So:

- a change made through this process (API, console, a CLI command running in it) is
  seen by the next request;
- a change made by another process on the same database (another node, the CLI run
  next to a server) is seen within :data:`TTL_SECONDS` of the runtime's clock.

An answer read while a write of its kind was under way is not kept: each write bumps a
generation counter when it is made and again once its transaction has ended (its
connection went back to the pool, committed or rolled back), and an answer is stored with
the generation seen before its query ran. A write inside a unit of work commits only when
the unit ends, so until then the context that made it reads past the cache: its reads may
see the unit's uncommitted rows, which no other thread must be handed.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from imprint.clock import Clock, SystemClock

__all__ = ["TTL_SECONDS", "ReadCache"]

TTL_SECONDS = 2.0
_MAX_ENTRIES = 512  # per kind and database; past it the kind starts again empty

T = TypeVar("T")

_lock = threading.Lock()
_generations: dict[tuple[str, str], int] = {}

_Slot = tuple[str, str]  # (database, kind)

#: The slots this context wrote in a transaction that has not ended yet.
_writing: ContextVar[frozenset[_Slot]] = ContextVar("imprint_cache_writing", default=frozenset())

#: Where a pooled connection keeps the slots written in its open transaction.
_PENDING = "imprint_cache_pending"

_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def _database(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _bump(slot: _Slot) -> None:
    with _lock:
        _generations[slot] = _generations.get(slot, 0) + 1


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    """A connection went back to the pool: its transaction has ended (committed or not)."""
    pending: set[_Slot] | None = record.info.pop(_PENDING, None)
    if pending:
        for slot in pending:
            _bump(slot)
        _writing.set(_writing.get() - pending)


def _watch(engine: Engine) -> None:
    with _lock:
        if engine in _watched:
            return
        _watched.add(engine)
    event.listen(engine, "checkin", _checked_in)


class ReadCache:
    """Cached reads of one kind of stored object (``kind``) on one database."""

    def __init__(
        self, engine: Engine, kind: str, ttl: float = TTL_SECONDS, clock: Clock | None = None
    ) -> None:
        self._slot: _Slot = (_database(engine), kind)
        self._ttl = ttl
        self._clock = clock or SystemClock()
        self._entries: dict[Hashable, tuple[float, int, object]] = {}
        _watch(engine)

    def _generation(self) -> int:
        return _generations.get(self._slot, 0)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached answer for ``key``, else ``load()`` (kept for the next caller)."""
        if self._slot in _writing.get():
            return load()  # it may read this context's uncommitted writes
        now = self._clock.now().timestamp()
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

    def changed(self, conn: Connection) -> None:
        """Forget every answer of this kind in this process, now and when the transaction
        of ``conn`` ends. Call it in the transaction, before writing this kind on ``conn``."""
        _bump(self._slot)
        pending: set[_Slot] = conn.info.setdefault(_PENDING, set())
        pending.add(self._slot)
        _writing.set(_writing.get() | {self._slot})
