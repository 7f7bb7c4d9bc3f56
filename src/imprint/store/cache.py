"""A per-process cache for what every provisioning request reads but rarely changes.

Enrollments, the deny-list, manufacturer CRLs and client CAs are read by every
attestation and written by an administrator now and then. A :class:`ReadCache` keeps
answers for :data:`TTL_SECONDS` and forgets all of a kind at once when this process
writes that kind, through any store object on the same database. So:

- a change made through this process (API, console, a CLI command running in it) is
  seen by the next request;
- a change made by another process on the same database (another node, the CLI run
  next to a server) is seen within :data:`TTL_SECONDS` of the runtime's clock;
- sooner, within milliseconds: each write also tells the other processes, in its
  transaction, so that they hear of it when, and only if, the transaction commits. On
  PostgreSQL it sends ``NOTIFY imprint_cache, '<kind>'``, and every process keeps a
  connection that LISTENs and forgets the kind when told, a few milliseconds after the
  commit. On a SQLite file it adds one to the kind's row in ``cache_changes`` and to the
  file's ``user_version`` (a number in its header), and every process keeps a connection
  that looks every :data:`POLL_SECONDS` whether that number moved (``PRAGMA
  user_version``, which reads no table) and, when it did, which kinds' counts moved.
  While that connection is down (the database restarted, a network cut, a file that
  cannot be read) the process has no way to hear of changes, so its caches of that
  database answer nothing from memory until the listener is back; then it forgets
  everything it held, since it may have missed changes meanwhile.

An answer read while a write of its kind was under way is not kept: each write bumps a
generation counter when it is made and again once its transaction has ended (its
connection went back to the pool, committed or rolled back), and an answer is stored with
the generation seen before its query ran. A write inside a unit of work commits only when
the unit ends, so until then the context that made it reads past the cache: its reads may
see the unit's uncommitted rows, which no other thread must be handed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from imprint.clock import Clock, SystemClock
from imprint.logs import get_logger
from imprint.store.db import engines, group_member_hooks, sqlite_file

__all__ = [
    "CHANNEL",
    "TTL_SECONDS",
    "ReadCache",
    "generation",
    "heard_everything",
    "listening",
    "look_now",
    "looker",
    "on_change",
]

log = get_logger(__name__)

#: The PostgreSQL notification channel of cache invalidations; the payload is the kind.
CHANNEL = "imprint_cache"
#: How long the listener waits before connecting again after losing its connection.
RECONNECT_SECONDS = 0.5
#: How often a process looks for other processes' changes to a SQLite file.
POLL_SECONDS = 0.05
#: How long :func:`look_now` waits for a look under way in the listener's thread.
LOOK_WAIT_SECONDS = 0.05

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
_NOTIFY = text("SELECT pg_notify(:channel, :kind)")
_COUNTS = "SELECT kind, changes FROM cache_changes"
_COUNT_CHANGE = text(
    "INSERT INTO cache_changes (kind, changes) VALUES (:kind, 1)"
    " ON CONFLICT (kind) DO UPDATE SET changes = cache_changes.changes + 1"
)
#: Moves with every counted change: a look reads it, and the counts only when it moved.
#: (``PRAGMA data_version`` moves with every commit of another connection, the device
#: plane's included, so a request's look after one read the counts each time.)
_CHANGES_VERSION = "PRAGMA user_version"


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


def _group_writes(conn: Connection) -> None:
    """A member of a commit group reads past the cache what earlier members wrote."""
    pending: set[_Slot] | None = conn.info.get(_PENDING)
    if pending:
        _writing.set(_writing.get() | pending)


group_member_hooks.append(_group_writes)


def _watch(engine: Engine) -> None:
    with _lock:
        if engine in _watched:
            return
        _watched.add(engine)
    for pool_of in engines(engine):  # the engine and its event loop's twin (PostgreSQL)
        event.listen(pool_of, "checkin", _checked_in)
    if _shared(engine):
        _Listener.start(engine)


def _shared(engine: Engine) -> bool:
    """Whether other processes may use ``engine``'s database: PostgreSQL, a SQLite file."""
    if engine.dialect.name == "postgresql":
        return True
    return engine.dialect.name == "sqlite" and sqlite_file(engine.url.database)


class _Listener:
    """One thread per process and shared database: hears which kinds other processes
    changed (:meth:`_listen`) and bumps the generation of each."""

    _running: dict[tuple[int, str], _Listener] = {}  # (pid, database): a fork has none

    def __init__(self, database: str) -> None:
        self.database = database
        self.connected = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._engines = 0  # engines on this database that are not disposed
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    @classmethod
    def start(cls, engine: Engine) -> None:
        database = _database(engine)
        key = (os.getpid(), database)
        with _lock:
            listener = cls._running.get(key)
            if listener is None:
                listener = (
                    _PostgresListener(database, engine)
                    if engine.dialect.name == "postgresql"
                    else _SqliteListener(database, engine)
                )
                cls._running[key] = listener
                listener._thread = threading.Thread(
                    target=listener._run, name="imprint-cache-listener", daemon=True
                )
                listener._thread.start()
            listener._engines += 1
        event.listen(engine, "engine_disposed", lambda _engine: listener._release(key))
        listener.connected.wait(timeout=5)  # start coherent when the database answers

    def _release(self, key: tuple[int, str]) -> None:
        """An engine was disposed: the last one stops the listener."""
        with _lock:
            self._engines -= 1
            if self._engines > 0:
                return
            self._running.pop(key, None)
            self._stopped.set()
            self.connected.clear()
        self._stopped_listening()

    def _stopped_listening(self) -> None:
        """After :meth:`_release` has stopped the listener; see the subclasses."""

    @classmethod
    def of(cls, database: str) -> _Listener | None:
        return cls._running.get((os.getpid(), database))

    def _forget_all(self) -> None:
        with _lock:
            slots = [slot for slot in _generations if slot[0] == self.database]
            callbacks = [c for found in self._callbacks.values() for c in found]
        for slot in slots:
            _bump(slot)
        for callback in callbacks:
            callback()

    def _changed(self, kind: str) -> None:
        _bump((self.database, kind))
        for callback in self._callbacks.get(kind, ()):
            callback()

    def _run(self) -> None:
        unavailable = False  # said once, until the listener is connected again
        while not self._stopped.is_set():
            try:
                self._listen()
            except Exception as exc:
                if self.connected.is_set():
                    log.warning("cache_listener_lost", error=exc.__class__.__name__)
                elif not unavailable:
                    log.warning("cache_listener_unavailable", error=str(exc))
                unavailable = not self.connected.is_set()
                self.connected.clear()
                self._forget_all()
            self._stopped.wait(RECONNECT_SECONDS)

    def heard_everything(self, timeout: float) -> bool:
        """Wait until what was committed before this call has been heard of; whether it
        was within ``timeout`` seconds."""
        return True  # PostgreSQL delivers a notification as its transaction commits

    def _listen(self) -> None:
        """Connect, forget everything, set :attr:`connected`, then call :meth:`_changed`
        for each kind another process changes, until stopped; raise when the connection
        is lost."""
        raise NotImplementedError


class _PostgresListener(_Listener):
    """LISTENs on :data:`CHANNEL`; each notification's payload is the kind."""

    def __init__(self, database: str, engine: Engine) -> None:
        super().__init__(database)
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)

    def _listen(self) -> None:
        import psycopg  # PostgreSQL only: a SQLite process (and the CLI) never loads it

        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name="imprint-cache-listener",
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._forget_all()  # what changed while nobody listened
            if self._stopped.is_set():
                return
            self.connected.set()
            while not self._stopped.is_set():
                for notice in conn.notifies(timeout=1.0):
                    self._changed(notice.payload)
                conn.execute("SELECT 1")  # notices a dead connection


class _SqliteListener(_Listener):
    """Looks every :data:`POLL_SECONDS` whether a counted change was committed to the
    file (its ``user_version`` moved), and if one was, which kinds' counts in
    ``cache_changes`` moved."""

    def __init__(self, database: str, engine: Engine) -> None:
        super().__init__(database)
        self._path = str(engine.url.database)
        self._looked = threading.Condition()
        self._looks = 0
        # The connection, the version and the counts last seen: the thread's, and a
        # request's that looks itself (look_now), one at a time.
        self._looking = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._version = 0
        self._counts: dict[str, int] = {}
        self._due: set[str] = set()  # kinds a request's look forgot: callbacks owed

    def heard_everything(self, timeout: float) -> bool:
        # A look under way may have begun before the call: wait for the one after it.
        with self._looked:
            wanted = self._looks + 2
            return self._looked.wait_for(lambda: self._looks >= wanted, timeout)

    def _stopped_listening(self) -> None:
        """Wait until the thread has closed its connection (it wakes at once). A server
        that forks its workers disposes its engine first, and SQLite must have no
        connection open in a process that forks: the child would inherit its view of
        the file's locks and find the database locked."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _listen(self) -> None:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            with self._looking:
                # The version first: a commit between the two reads shows as a new
                # version at the next look, which then reads the counts again.
                self._version = conn.execute(_CHANGES_VERSION).fetchone()[0]
                self._counts = dict(conn.execute(_COUNTS).fetchall())
                self._conn = conn
            self._forget_all()  # what changed while nobody looked
            if self._stopped.is_set():
                return
            self.connected.set()
            while not self._stopped.wait(POLL_SECONDS):
                self.look()
        finally:
            with self._looking:
                self._conn = None
                conn.close()

    def look(self, wait: float = -1, *, calling_back: bool = True) -> set[str]:
        """Look now whether a counted change was committed (the file's ``user_version``
        moved), and forget the kinds whose counts moved; the kinds. The thread looks
        every :data:`POLL_SECONDS` and calls the kinds' callbacks (:func:`on_change`). A
        request that must not act on what it may not have heard of yet looks itself
        (:func:`look_now`, ``calling_back`` false): the kinds are forgotten before it
        returns, and their callbacks left to the thread's next look (a callback may
        wait, for a CRL being made say, and a request must not). It waits at most
        ``wait`` seconds for a look under way."""
        if not self._looking.acquire(timeout=wait):
            return set()
        try:
            conn = self._conn
            if conn is None:
                return set()
            moved: set[str] = set()
            version = conn.execute(_CHANGES_VERSION).fetchone()[0]
            if version != self._version:  # a change was counted: which kinds moved?
                seen = dict(conn.execute(_COUNTS).fetchall())
                moved = {k for k in seen.keys() | self._counts.keys()
                         if seen.get(k) != self._counts.get(k)}  # fmt: skip
                self._version, self._counts = version, seen  # both read: kept
            for kind in moved:  # before another look can answer that nothing moved
                _bump((self.database, kind))
            if calling_back:
                due, self._due = moved | self._due, set()
            else:
                self._due |= moved
        finally:
            self._looking.release()
        if calling_back:
            for kind in due:
                for callback in self._callbacks.get(kind, ()):
                    callback()
        with self._looked:
            self._looks += 1
            self._looked.notify_all()
        return moved


def looker(engine: Engine) -> Callable[[], set[str]]:
    """:func:`look_now` for ``engine``, with the database's name worked out once: for a
    call on every request."""
    if not _shared(engine) or engine.dialect.name != "sqlite":
        return set
    database = _database(engine)

    def look() -> set[str]:
        listener = _Listener._running.get((os.getpid(), database))
        if not isinstance(listener, _SqliteListener) or not listener.connected.is_set():
            return set()
        try:
            return listener.look(wait=LOOK_WAIT_SECONDS, calling_back=False)
        except sqlite3.Error:
            return set()  # the listener's thread finds out and reads through meanwhile

    return look


def look_now(engine: Engine) -> set[str]:
    """The kinds another process changed on ``engine``'s SQLite file since this process
    last looked, forgotten now (their :func:`generation` moved) rather than at the
    listener's next look, up to :data:`POLL_SECONDS` later; their callbacks run at that
    look. Nothing elsewhere (PostgreSQL's notifications arrive as their transactions
    commit). For a refusal that may come from not having heard yet, as a client CA added
    through another worker a moment ago."""
    return looker(engine)()


def listening(engine: Engine) -> bool:
    """Whether this process hears of other processes' changes to ``engine``'s database
    at once (its listener is connected); always true for a database no other process can
    open (SQLite in memory)."""
    if not _shared(engine):
        return True
    listener = _Listener.of(_database(engine))
    return listener is not None and listener.connected.is_set()


def generation(engine: Engine, kind: str) -> int:
    """A number that moves whenever ``kind`` changes on ``engine``'s database, in this
    process or (once heard of) in another one: for what is derived from a kind outside a
    :class:`ReadCache`, to tell whether it is still current."""
    return _generations.get((_database(engine), kind), 0)


def heard_everything(engine: Engine, timeout: float = 5.0) -> bool:
    """Wait until this process has heard of every change committed to ``engine``'s
    database before the call (on SQLite, its own included: the listener hears those
    too, up to :data:`POLL_SECONDS` later, and forgets their kinds once more); whether it
    had within ``timeout`` seconds. For a test that counts what a cache reads."""
    listener = _Listener.of(_database(engine))
    return listener is None or listener.heard_everything(timeout)


def on_change(engine: Engine, kind: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` when another process (or this one) changed ``kind`` on the
    database of ``engine``, and whenever the listener reconnects; nothing for SQLite in
    memory. For caches that are not :class:`ReadCache` (a CRL, a TLS trust store)."""
    _watch(engine)
    listener = _Listener.of(_database(engine))
    if listener is not None:
        with _lock:
            listener._callbacks.setdefault(kind, []).append(callback)


def notify(conn: Connection, kind: str) -> None:
    """Tell the other processes, once ``conn``'s transaction commits, that ``kind``
    changed."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": CHANNEL, "kind": kind})
    elif _shared(conn.engine):
        conn.execute(_COUNT_CHANGE, {"kind": kind})
        # The transaction holds the write lock since the line above: nobody moves the
        # number between the read and the write.
        (version,) = conn.exec_driver_sql(_CHANGES_VERSION).one()
        conn.exec_driver_sql(f"{_CHANGES_VERSION} = {(int(version) + 1) % 2**31}")


class ReadCache:
    """Cached reads of one kind of stored object (``kind``) on one database."""

    def __init__(
        self, engine: Engine, kind: str, ttl: float = TTL_SECONDS, clock: Clock | None = None
    ) -> None:
        self._slot: _Slot = (_database(engine), kind)
        self._ttl = ttl
        self._clock = clock or SystemClock()
        self._entries: dict[Hashable, tuple[float, int, object]] = {}
        with _lock:
            _generations.setdefault(self._slot, 0)  # known, so a reconnect forgets it too
        _watch(engine)
        self._coherent: Callable[[], bool] | None = None
        if _shared(engine):
            database = self._slot[0]

            def coherent() -> bool:
                listener = _Listener.of(database)
                return listener is not None and listener.connected.is_set()

            self._coherent = coherent

    def _generation(self) -> int:
        return _generations.get(self._slot, 0)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached answer for ``key``, else ``load()`` (kept for the next caller)."""
        if self._slot in _writing.get():
            return load()  # it may read this context's uncommitted writes
        if self._coherent is not None and not self._coherent():
            return load()  # deaf to other nodes' changes: nothing from memory
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
        if self._slot not in pending:
            notify(conn, self._slot[1])
        pending.add(self._slot)
        _writing.set(_writing.get() | {self._slot})
