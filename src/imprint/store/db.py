"""Engines and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes,
fast enough to be the embedded default); PostgreSQL is chosen by URL. A PostgreSQL
engine has a twin on psycopg's async connection, for the device plane's operations on
the event loop (:func:`on_event_loop`, decision 0016).
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import functools
import hashlib
import os
import re
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, Protocol, Self, TypeVar
from weakref import WeakKeyDictionary

import anyio.to_thread
import greenlet
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.engine.util import TransactionalContext
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from imprint.errors import ConfigurationError
from imprint.locks import holds_a_lock
from imprint.logs import get_logger
from imprint.store.tables import UTCDateTime

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "Checkpointer",
    "Prepared",
    "after_commit",
    "create_engine",
    "current_revision",
    "engines",
    "group_member_hooks",
    "group_memo",
    "grouped",
    "guarded",
    "head_revision",
    "in_unit_of_work",
    "on_event_loop",
    "own_transaction",
    "reading",
    "runs_on_event_loop",
    "serialized",
    "sqlite_file",
    "unit_of_work",
    "upgrade",
    "writing",
]

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)

#: How long a writer waits for SQLite's lock (and for this process's writer lock).
_BUSY_TIMEOUT_MS = 5000
#: A pooled connection checkpoints the WAL once it holds this many pages: SQLite's
#: default, except in a server, where a thread does it (:class:`Checkpointer`).
_AUTOCHECKPOINT_PAGES = 1000


# One writer at a time ------------------------------------------------------------------
#
# SQLite lets one connection write at a time; the others wait in its busy handler, which
# sleeps 1, 2, 5, 10 ... 100 ms between tries. Under concurrent registrations those sleeps
# become the latency tail. A connection therefore takes two locks before its first write
# and gives them back when the transaction ends: its engine's lock, so the threads of this
# process queue in order, and an exclusive flock(2) on ``<database>.writer-lock``, so the
# worker processes (and the CLI) queue in the kernel instead of polling. SQLite's own lock
# still guards the file: a write that could not get the thread lock in time goes on to
# SQLite's busy handler as before.

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class _WriterCursor(sqlite3.Cursor):
    connection: _WriterConnection

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        self.connection.before(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Self:
        self.connection.before(sql)
        return super().executemany(sql, seq_of_parameters)


class _WriterConnection(sqlite3.Connection):
    """A sqlite3 connection that holds its engine's writer lock from its first write to
    the end of that transaction (commit, rollback or close)."""

    writer_lock: threading.Lock
    lock_timeout: float
    lock_file: str | None
    autocheckpoint_pages: int
    holding = False
    _lock_fd: int | None = None

    def before(self, sql: str) -> None:
        if self.holding or sql.lstrip()[:6].upper() not in _WRITES:
            return
        self.take()

    def take(self) -> None:
        """Take the writer locks now (before a ``BEGIN IMMEDIATE``), not at the first
        write. Bounded: past the timeout, SQLite's busy handler decides as it did before."""
        if self.holding:
            return
        self.holding = self.writer_lock.acquire(timeout=self.lock_timeout)
        if self.holding and self.lock_file is not None:
            # Held by a live transaction only: the kernel drops it if its process dies.
            fcntl.flock(self._descriptor(self.lock_file), fcntl.LOCK_EX)

    def _descriptor(self, lock_file: str) -> int:
        if self._lock_fd is None:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._lock_fd = os.open(lock_file, flags, 0o600)
        return self._lock_fd

    def try_take(self) -> bool:
        """Take the writer locks if no one holds them; never wait."""
        if self.holding:
            return True
        if not self.writer_lock.acquire(blocking=False):
            return False
        if self.lock_file is not None:
            try:
                fcntl.flock(self._descriptor(self.lock_file), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.writer_lock.release()
                return False
            except BaseException:  # the lock file cannot be opened: not half-taken
                self.writer_lock.release()
                raise
        self.holding = True
        return True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self.writer_lock.release()

    def cursor(self, factory: Any = _WriterCursor) -> Any:
        return super().cursor(factory)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def sqlite_file(database: str | None) -> bool:
    """Whether a SQLite URL's database is a file other processes may open too: not
    memory, and not a ``file:`` URI (which imprint treats as memory)."""
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


def _writer_connection_class(database: str | None, timeout: float) -> type[_WriterConnection]:
    """A connection class with its own locks: one per engine (per database file)."""
    attributes = {
        "writer_lock": threading.Lock(),
        "lock_timeout": timeout,
        "lock_file": f"{database}.writer-lock" if sqlite_file(database) else None,
        "autocheckpoint_pages": _AUTOCHECKPOINT_PAGES,
    }
    return type("SerializedWriterConnection", (_WriterConnection,), attributes)


# Checkpoints off the request path (SQLite) ---------------------------------------------
#
# In WAL mode a commit appends the pages it changed to the WAL. Once the WAL holds 1,000
# pages, SQLite's default, the commit that crossed the line also copies them back into
# the database file and syncs it, on its request's time: in process, 1 commit in 100 of
# a run of registrations took 5.4 ms instead of the usual 0.11 ms, and on SQLite the
# device plane runs on the event loop, so every other request waited too. A server
# checkpoints in a thread of its own instead, every quarter of a second: PASSIVE, so it
# neither waits for nor blocks a writer or a reader, and SQLite copies and syncs without
# holding Python's GIL. The pooled connections then checkpoint themselves only past
# 10,000 pages, should the thread fall behind.

#: What the pooled connections of a server's engine checkpoint at (the backstop).
_BACKSTOP_PAGES = 10_000
#: How often a server's checkpointer runs.
CHECKPOINT_SECONDS = 0.25

_connection_classes: WeakKeyDictionary[Engine, type[_WriterConnection]] = WeakKeyDictionary()


class Checkpointer:
    """Checkpoints the WAL of a SQLite database in a thread of its own (see above)."""

    def __init__(self, database: str, every: float = CHECKPOINT_SECONDS) -> None:
        self._database = database
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="imprint-sqlite-checkpointer", daemon=True
        )
        #: Checkpoints that ran, and those that could not copy every frame (a reader
        #: still used the older ones); for tests and the curious.
        self.rounds = 0
        self.partial = 0

    @classmethod
    def start(cls, engine: Engine, every: float = CHECKPOINT_SECONDS) -> Checkpointer | None:
        """Checkpoint ``engine``'s database in the background from now on, and let its
        pooled connections leave it to the thread; None when it is not a SQLite file."""
        connection_class = _connection_classes.get(engine)
        if connection_class is None or connection_class.lock_file is None:
            return None
        database = engine.url.database
        if not database:
            return None
        connection_class.autocheckpoint_pages = _BACKSTOP_PAGES
        engine.pool.dispose()  # the idle connections go; new ones take the backstop
        checkpointer = cls(database, every)
        checkpointer._thread.start()
        return checkpointer

    def _run(self) -> None:
        connection = sqlite3.connect(self._database, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            failing = False
            while not self._stop.wait(self._every):
                try:
                    busy, _, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if not failing:  # once per spell of failures
                        log.warning("sqlite_checkpoint_failed", error=str(exc))
                    failing = True
                    continue
                failing = False
                self.rounds += 1
                self.partial += int(busy)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    pages = getattr(dbapi_connection, "autocheckpoint_pages", _AUTOCHECKPOINT_PAGES)
    cursor.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
    # Temporary files in memory, above all a savepoint's journal: each member of a
    # commit group is a savepoint, and SQLite keeps the original of every page it
    # changes for its rollback, in memory up to 64 KiB and then in a temporary file, one
    # write(2) for the page's number and one for its bytes, about 60 system calls an
    # x509 registration (bench/README.md, step 31). Sorts without an index and
    # statement journals are held in memory too, in proportion to the rows they take;
    # a migration, which rebuilds whole tables and indexes, runs with SQLite's default
    # (:func:`upgrade`).
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _alive_at_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Refuse a pooled PostgreSQL connection the server has closed, without a round trip.

    An idle connection in the pool is sent nothing; if its socket is readable, the server
    wrote to it anyway (a restart or an administrator ends connections with a message and
    closes them) or the socket is at end of file. Raising ``DisconnectionError`` here
    makes the pool drop it and check out another (a fresh one if need be): the same
    effect as ``pool_pre_ping`` for one ``poll(2)`` of the socket instead of a
    ``SELECT 1`` per checkout. A connection cut without a word (a network partition) is
    found by the first statement, whose error invalidates the pool as before.

    The same for the event loop's twin: ``driver_connection`` is psycopg's own
    connection, sync or async, under SQLAlchemy's adapter.
    """
    dbapi_connection = record.driver_connection
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the connection is closed")
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        raise DisconnectionError("the connection's socket is gone") from None
    if readable:
        raise DisconnectionError("the server wrote to an idle connection or closed it")


def create_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the settings imprint relies on.

    Raises:
        ConfigurationError: the URL cannot be parsed or names an unknown driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError("database.url: not a valid database URL") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Pool sized for the server's thread pool (40 threads): overflow connections
            # would otherwise be opened and closed on every burst.
            connection_class = _writer_connection_class(parsed.database, _BUSY_TIMEOUT_MS / 1000)
            engine = sa_create_engine(
                parsed,
                connect_args={"check_same_thread": False, "factory": connection_class},
                pool_size=16,
                max_overflow=32,
                # The connection used last goes out first: its page cache is the warmest
                # (SQLite keeps one per connection).
                pool_use_lifo=True,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            _connection_classes[engine] = connection_class
            return engine
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # A bounded connect: /readyz answers "not ready" instead of hanging when the
        # database host is unreachable.
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
        engine = sa_create_engine(parsed, pool_size=10, max_overflow=20, connect_args=connect_args)
        if parsed.get_backend_name() == "postgresql":
            event.listen(engine, "checkout", _alive_at_checkout)
            if parsed.drivername == "postgresql+psycopg":
                _add_loop_engine(engine, parsed, connect_args)
        return engine
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"database.url: {exc}") from None


def _alembic_config(connection: Any) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration (idempotent).

    A database already at the newest revision is recognized with one query, without
    loading Alembic and its scripts: every command of the CLI opens the database this
    way, and most find nothing to do.

    Raises:
        ConfigurationError: the database cannot be reached.
    """
    try:
        with engine.begin() as connection:
            if _stored_revision(connection) == known_head():
                return
            from alembic import command

            if connection.dialect.name == "sqlite":
                # A migration copies whole tables and builds indexes: its sorts and
                # journals go to files, as SQLite's default has them, not to memory
                # in proportion to the tables. The connection leaves the pool (closed
                # at the end), so no pooled one keeps the setting.
                connection.exec_driver_sql("PRAGMA temp_store=DEFAULT")
                connection.detach()
            command.upgrade(_alembic_config(connection), "head")
    except SQLAlchemyError as exc:
        raise ConfigurationError(f"database: cannot migrate: {exc.__class__.__name__}") from exc


def _stored_revision(connection: Connection) -> str | None:
    """The revision in ``alembic_version``; None when the table is missing or empty."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it is empty."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision this version of imprint knows (as Alembic reads the scripts)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


_REVISION_LINE = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*"([^"]*)"', re.MULTILINE)


@functools.cache
def known_head() -> str | None:
    """The newest revision, read from the scripts' ``revision``/``down_revision`` lines
    without importing Alembic: the one revision no other script names as its parent.
    (A test holds it equal to :func:`head_revision`.)"""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_MIGRATIONS / "versions").glob("*.py"):
        for kind, value in _REVISION_LINE.findall(script.read_text()):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


# The event loop's engine (PostgreSQL) ---------------------------------------------------
#
# On PostgreSQL the device plane's operations run on the event loop (decision 0016): the
# same synchronous use case and stores, in a greenlet (SQLAlchemy's ``greenlet_spawn``,
# the mechanism under its asyncio extension), with every statement sent through
# psycopg's async connection. A statement waits for the server by awaiting, so the loop
# serves other requests meanwhile, and no thread is involved. Each PostgreSQL engine has
# a twin for this, the synchronous face of an ``AsyncEngine`` on the same URL with a pool
# of its own; inside :func:`on_event_loop` the functions of this module hand out the
# twin's connections, everywhere else (the admin API's thread pool, background rounds,
# the CLI) the engine's own. Stores hold the engine and never see the difference.
#
# A ``threading.Lock`` held across a statement inside such an operation would stop the
# loop when a second request wants it (:mod:`imprint.locks`).

_loop_engines: WeakKeyDictionary[Engine, AsyncEngine] = WeakKeyDictionary()
_on_loop: ContextVar[bool] = ContextVar("imprint_on_event_loop", default=False)


def _add_loop_engine(engine: Engine, url: Any, connect_args: dict[str, Any]) -> None:
    twin = create_async_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args)
    event.listen(twin.sync_engine, "checkout", _alive_at_checkout)
    _loop_engines[engine] = twin
    event.listen(engine, "engine_disposed", _dispose_loop_engine)


def _dispose_loop_engine(engine: Engine) -> None:
    """Close the twin's pooled connections when the engine is disposed.

    Closing an async connection takes an event loop; the server's has stopped by now (or
    is busy in this very call, in process), so a short-lived thread runs one of its own.
    """
    twin = _loop_engines.get(engine)
    if twin is None:
        return
    pool = twin.sync_engine.pool
    if not isinstance(pool, QueuePool) or pool.checkedin() == 0:
        return
    failed: list[BaseException] = []

    def dispose() -> None:
        try:
            asyncio.run(twin.dispose())
        except Exception as exc:  # logged: the process is letting go of the database
            failed.append(exc)

    closing = threading.Thread(target=dispose, name="imprint-close-loop-engine")
    closing.start()
    closing.join()
    if failed:
        log.warning("loop_engine_dispose_failed", error=failed[0].__class__.__name__)


def engines(engine: Engine) -> tuple[Engine, ...]:
    """``engine`` and, on PostgreSQL, its event loop's twin: where to listen for events
    (statements, checkouts) of every connection the stores of ``engine`` use."""
    twin = _loop_engines.get(engine)
    return (engine,) if twin is None else (engine, twin.sync_engine)


def runs_on_event_loop(engine: Engine) -> bool:
    """Whether :func:`on_event_loop` sends ``engine``'s statements through an async
    driver (PostgreSQL); on SQLite, run the operation inline instead."""
    return engine in _loop_engines


async def on_event_loop(
    engine: Engine, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``function(*args, **kwargs)`` on the event loop, every statement it makes on
    ``engine`` awaited through the async twin (see above)."""
    token = _on_loop.set(True)
    try:
        return await greenlet_spawn(functools.partial(function, *args, **kwargs))
    finally:
        _on_loop.reset(token)


def in_a_thread(function: Callable[[], T]) -> T:
    """From inside :func:`on_event_loop`: ``function()`` in the thread pool, its
    statements on the engine's own connections, while the loop goes on serving (for
    work that blocks without a statement: a network call, a subprocess)."""
    return await_(anyio.to_thread.run_sync(functools.partial(_off_the_loop, function)))


def _off_the_loop(function: Callable[[], T]) -> T:
    if _unit.get() is not None:  # its connection is the loop's: not for this thread
        raise RuntimeError("in_a_thread is for work outside a unit of work")
    _on_loop.set(False)  # the thread runs in a copy of the request's context
    return function()


def _connections(engine: Engine) -> Engine:
    """Where ``engine``'s connections come from in this context."""
    if _on_loop.get():
        twin = _loop_engines.get(engine)
        if twin is not None:
            return twin.sync_engine
    return engine


# Statements compiled once, parameters bound directly ------------------------------------
#
# Core spends more on a statement's parameters than the driver spends on the whole
# statement: on each execution it looks the statement up in its compiled cache by a key
# made from its structure, then builds the parameters through its generic machinery
# (in process, 9 % of a registration's CPU went to that alone, across its writes of
# about 100 values; bench/README.md, step 17). A ``Prepared`` statement is compiled
# once per dialect and set of keys, and binds each execution's values in the compiled
# order through the same type processors Core would use (the dialect's form of each
# type, ``dialect_impl(dialect).bind_processor``: the UTC timestamps as SQLite's text).
#
# It then runs on a DB-API cursor of the connection, as Core's ``exec_driver_sql`` does
# underneath, without Core's execution context and result object: those two cost as much
# as the driver's own work on SQLite (a context per statement; for a query, a result
# whose metadata is built from the cursor's description and then unused, since the
# values are read through the plan's own readers). Measured in process, 16 in flight:
# a registration's CPU -7 % (x509) to -12 % (oob-secret) on SQLite, -14 % (x509) on
# PostgreSQL (bench/README.md, step 26). What Core does around the cursor is kept, with
# its own methods: the transaction begun on first use (and a failed one refused), the
# engine's ``before_cursor_execute`` / ``after_cursor_execute`` events (the statement
# budget test and the fault tests listen to them), the dialect's ``do_execute``, and a
# driver error handled as Core handles it (``IntegrityError`` and the rest, a lost
# connection invalidated), also while the rows are fetched; any other error (a
# listener's) is raised as itself, as Core raises it. Not kept: echo logging and a
# dialect's own ``do_execute`` events (imprint sets neither), and the parameters of an
# ``executemany`` shown as one set in a driver error's message. The row count is the
# driver's, so an INSERT ... ON CONFLICT DO NOTHING needs no ``preserve_rowcount`` to
# say it wrote nothing.


def _bind_processor(kind: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """How a value of ``kind`` is bound, as Core binds it; a timestamp on SQLite by
    :meth:`~imprint.store.tables.UTCDateTime.sqlite_text`, to the same text."""
    if dialect.name == "sqlite" and isinstance(kind, UTCDateTime):
        return UTCDateTime.sqlite_text
    processor: Callable[[Any], Any] | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


class _Plan:
    """A statement compiled for one dialect and one set of keys."""

    __slots__ = ("columns", "fixed", "names", "positional", "processors", "readers", "sql")

    def __init__(self, compiled: SQLCompiler, dialect: Dialect, keys: frozenset[str]) -> None:
        if compiled.insert_prefetch or compiled.update_prefetch or "POSTCOMPILE" in str(compiled):
            raise TypeError("a prepared statement takes every value, and no expanding IN")
        names = compiled.positiontup or list(compiled.bind_names.values())
        binds = {compiled.bind_names[b]: b for b in compiled.bind_names}
        # A value written into the statement (``id + 1``, a LIMIT) is bound as it is.
        self.fixed = {
            name: binds[name].value
            for name in names
            if name not in keys and not binds[name].required and binds[name].callable is None
        }
        missing = [name for name in names if name not in keys and name not in self.fixed]
        if missing:
            raise TypeError(f"a prepared statement needs values for {missing}")
        self.sql = compiled.string
        self.names = tuple(names)
        self.positional = compiled.positiontup is not None
        # The dialect's own form of each type, as Core binds it (SQLite's DATETIME writes
        # its text itself, microseconds always included).
        self.processors = tuple(_bind_processor(binds[name].type, dialect) for name in names)
        # A query's columns, read back through each type's result processor as Core
        # reads them (SQLite's DATETIME text to a datetime, the UTC type's zone).
        results = compiled._result_columns
        self.columns = tuple(column.keyname for column in results)
        self.readers = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in results
        )

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        if self.fixed:
            values = {**self.fixed, **values}
        bound = [
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.processors, strict=True)
        ]
        return tuple(bound) if self.positional else dict(zip(self.names, bound, strict=True))


def _bound(plan: _Plan, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
    try:
        return plan.bind(values)
    except Exception as error:  # as Core reports a value its type refuses
        kind = type(error)
        message = f"({kind.__module__}.{kind.__qualname__}) {error}"
        raise StatementError(message, plan.sql, None, error) from error


class Prepared:
    """A Core statement executed without Core's per-execution compilation (see above).

    For the fixed statements of the busy paths: every parameter comes from the values
    given or is written into the statement (no column defaults, no expanding ``IN``; a
    statement that needs them is refused with ``TypeError`` on its first execution).
    It runs without Core's execution context, so a statement with execution options,
    which only that context would read, is refused with ``TypeError`` at once.
    :meth:`rows` reads a query's rows through the result processors of its columns'
    types, as Core does.
    """

    __slots__ = ("_plans", "_statement")

    def __init__(self, statement: Executable) -> None:
        if options := statement.get_execution_options():
            raise TypeError(f"a Prepared statement runs without execution options: {options}")
        self._statement = statement
        self._plans: dict[tuple[type[Dialect], frozenset[str]], _Plan] = {}

    def execute(
        self, conn: Connection, values: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> int:
        """Run with one set of values, or with several (``executemany``): the number of
        rows it changed, as the driver counts them."""
        rows = [values] if isinstance(values, Mapping) else values
        cursor = self._run(conn, self._plan(conn.dialect, rows[0]), values, rows)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _run(
        self,
        conn: Connection,
        plan: _Plan,
        values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        rows: Sequence[Mapping[str, Any]],
    ) -> Any:
        bound = [_bound(plan, row) for row in rows]
        many = not isinstance(values, Mapping)
        parameters = bound if many else bound[0]
        return _on_cursor(conn, plan.sql, parameters, many)

    def bound(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[str, Any]:
        """The statement's text and ``values`` bound for the driver, to be sent later; a
        value its type refuses raised now, as :meth:`execute` raises it."""
        plan = self._plan(dialect, values)
        return plan.sql, _bound(plan, values)

    def _plan(self, dialect: Dialect, values: Mapping[str, Any]) -> _Plan:
        keys = frozenset(values)
        plan = self._plans.get((type(dialect), keys))
        if plan is None:
            compiled = self._statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
            plan = self._plans[(type(dialect), keys)] = _Plan(compiled, dialect, keys)
        return plan

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A query's rows, each a dict by column key, its values as Core reads them."""
        plan = self._plan(conn.dialect, values)
        fetched = _fetched(conn, self._run(conn, plan, values, [values]))
        columns, readers = plan.columns, plan.readers
        return [
            dict(
                zip(
                    columns,
                    [v if read is None else read(v) for v, read in zip(row, readers, strict=True)],
                    strict=True,
                )
            )
            for row in fetched
        ]


def _on_cursor(conn: Connection, sql: str, parameters: Any, many: bool) -> Any:
    """Execute ``sql`` on a new DB-API cursor of ``conn`` and return the cursor (the
    caller reads and closes it): what ``Connection._execute_context`` and
    ``_exec_single_context`` do around the driver, through the same methods, without an
    execution context or a result (see above)."""
    dbapi = conn._dbapi_connection
    if dbapi is None:
        dbapi = conn._revalidate_connection()
    root, nested = conn._transaction, conn._nested_transaction
    if (root is not None and not root.is_active) or (nested is not None and not nested.is_active):
        conn._invalid_transaction()  # raises, as Core does in a transaction that failed
    elif conn._trans_context_manager:
        TransactionalContext._trans_ctx_check(conn)
    if root is None:
        conn._autobegin()
    cursor = None
    try:
        cursor = _kept_cursor(dbapi) if conn.dialect.is_async else dbapi.cursor()
        events = conn._has_events or conn.engine._has_events
        if events:
            for listen in conn.dispatch.before_cursor_execute:  # may rewrite, as in Core
                sql, parameters = listen(conn, cursor, sql, parameters, None, many)
        if many:
            conn.dialect.do_executemany(cursor, sql, parameters, None)
        else:
            conn.dialect.do_execute(cursor, sql, parameters, None)
        if events:
            conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, many)
    except BaseException as error:
        _failed(conn, error, cursor, sql, parameters)
    return cursor


# On the event loop (PostgreSQL), the statements run through SQLAlchemy's async adapter,
# whose cursor wraps one of psycopg's and is made for each statement (entered through a
# greenlet switch) and closed after it, a few objects each time: in a profile, 7 % of
# an oob-secret registration's route. psycopg's own cursor can run any number of
# statements in turn, so each pooled connection keeps one for the statements run here,
# in the pool record's ``info`` (cleared when the connection is replaced), and reads a
# query's rows with the statement, in one ``await_``, as the adapter does; an error
# comes out of psycopg unchanged, as through the adapter.

_KEPT = "imprint_kept_cursor"
_TUPLES_OK = 2  # libpq's PGRES_TUPLES_OK (psycopg.pq.ExecStatus): a result with rows


class _KeptCursor:
    """A psycopg ``AsyncCursor`` of one connection, used synchronously from inside a
    greenlet as the adapter's cursor is: a statement and its rows in one ``await_`` (one
    greenlet switch), as the adapter reads them; ``close`` lets go of the rows and keeps
    the cursor for the connection's next statement."""

    __slots__ = ("_cursor", "_rows", "connection")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._cursor = connection.cursor()
        self._rows: list[Any] = []

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    async def _run(self, sql: str, parameters: Any) -> None:
        cursor = self._cursor
        await cursor.execute(sql, parameters)
        result = cursor.pgresult
        if result is not None and result.status == _TUPLES_OK:
            self._rows = await cursor.fetchall()  # already here: no round trip

    def execute(self, sql: str, parameters: Any = None) -> None:
        await_(self._run(sql, parameters))

    def executemany(self, sql: str, parameters: Any) -> None:
        await_(self._cursor.executemany(sql, parameters))

    def commit_after(self, statements: Sequence[tuple[str, Any]]) -> None:
        """``statements``, then COMMIT, in one round trip (see :func:`_commit`)."""
        await_(self._pipelined(statements))

    async def _pipelined(self, statements: Sequence[tuple[str, Any]]) -> None:
        cursor = self._cursor
        async with self.connection.pipeline():
            for sql, parameters in statements:
                await cursor.execute(sql, parameters)
            await cursor.execute(_COMMIT)

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        self._rows = []


def _kept_cursor(fairy: Any) -> Any:
    """The cursor ``fairy``'s connection keeps for :class:`Prepared` (see above)."""
    driver = fairy.driver_connection
    kept = fairy.info.get(_KEPT)
    if kept is None or kept.connection is not driver:
        kept = fairy.info[_KEPT] = _KeptCursor(driver)
    return kept


def _failed(
    conn: Connection, error: BaseException, cursor: Any, sql: str | None, parameters: Any
) -> NoReturn:
    """Raise ``error`` as Core would in its cursor's execution: a driver error as
    SQLAlchemy's (``IntegrityError``, a lost connection invalidated), anything else
    (a listener's, a value the driver refuses before the database sees it) unchanged.
    Core closes the cursor unless the connection is lost. Without an execution context
    Core would wrap every error with a statement, so the statement goes only with a
    driver's error."""
    driver_error = isinstance(error, conn.dialect.loaded_dbapi.Error)
    conn._handle_dbapi_exception(error, sql if driver_error else None, parameters, cursor, None)


def _plain(conn: Connection, sql: str) -> None:
    """A statement without values or rows (a savepoint's, ``BEGIN IMMEDIATE``) on the
    driver's cursor, as :class:`Prepared` runs its statements: a commit group runs
    two a registration (its unit's savepoint and release) and one of its own."""
    _on_cursor(conn, sql, (), False).close()


def _fetched(conn: Connection, cursor: Any) -> list[Any]:
    """The cursor's rows, closed after; an error while fetching (SQLite computes the rows
    after the first as they are fetched) handled as Core's result handles it."""
    try:
        rows: list[Any] = cursor.fetchall()
    except BaseException as error:
        _failed(conn, error, cursor, None, None)
    cursor.close()
    return rows


# One transaction for several store calls ------------------------------------------------
#
# A unit of work makes the store calls of one thread share one connection and one
# transaction, committed when the unit ends without an error. It is lazy: it takes a
# connection at the first write made inside it, so writes that must be durable on their
# own first (the certificate ledger's reserve) and reads before the first write run on
# their own connections, and a thread never holds two pooled connections at once.


class _Unit:
    __slots__ = ("committed", "connection", "engine", "last")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: Connection | None = None
        self.committed: list[Callable[[], object]] = []
        #: Statements sent with the COMMIT, bound (:func:`last_before_commit`).
        self.last: list[tuple[str, Any]] = []


_unit: ContextVar[_Unit | None] = ContextVar("imprint_unit_of_work", default=None)


def _joined(engine: Engine) -> _Unit | None:
    unit = _unit.get()
    return unit if unit is not None and unit.engine is engine else None


def in_unit_of_work(engine: Engine) -> bool:
    """Whether this context's writes on ``engine`` join a unit of work (they commit
    together when it ends, or not at all)."""
    return _joined(engine) is not None


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[None]:
    """Run the store writes inside the block in one transaction (nested units join).

    Inside a commit group (:func:`grouped`) the unit is a savepoint of the group's
    transaction: released when the block ends without an error, rolled back to when it
    raises, committed with the group.
    """
    if _unit.get() is not None:
        yield
        return
    unit = _Unit(engine)
    token = _unit.set(unit)
    group = _grouped(engine)
    try:
        yield
        if unit.connection is not None:
            if group is None:
                _commit(unit.connection, unit.last)
            else:
                _plain(unit.connection, _RELEASE_UNIT)
                unit.connection = None
    finally:
        _unit.reset(token)
        if unit.connection is not None:
            if group is None:
                unit.connection.close()  # rolls back what was not committed
            else:
                _roll_back_to(group, _UNIT)
    if group is not None:
        group.committed.extend(unit.committed)
        return
    for callback in unit.committed:
        _run_quietly(callback)


def after_commit(engine: Engine, callback: Callable[[], object]) -> None:
    """Run ``callback`` once the active unit of work has committed (never when it rolls
    back); at once when there is none (the caller's writes have committed already), or
    when the commit group commits.

    For what may be lost with the process (a cache to drop, a prompt delivery of an
    outbox row the dispatcher would deliver anyway), never for an effect that must
    happen: that is an outbox row.
    """
    unit = _joined(engine)
    if unit is not None:
        unit.committed.append(callback)
        return
    group = _grouped(engine)
    if group is not None:
        group.committed.append(callback)
    else:
        _run_quietly(callback)


def last_before_commit(
    engine: Engine, conn: Connection, statement: Prepared, values: Mapping[str, Any]
) -> None:
    """Run ``statement`` on ``conn`` (from :func:`writing`) as its transaction's last
    statement, for one that takes a lock held to the commit (the audit chain's): on
    PostgreSQL, inside a unit of work, it waits for the unit's end and goes to the
    server with the COMMIT, in one round trip, so the lock is held for the server's own
    work only, not across the turns of a busy client between the unit's later
    statements. A value its type refuses is raised at once; what the server refuses is
    then the commit's error. Anywhere else (SQLite, whose writer lock is the
    transaction's anyway; a transaction of the caller's own) it runs at once.
    """
    unit = _joined(engine)
    if (
        unit is None
        or unit.connection is not conn
        or conn.dialect.name != "postgresql"
        or not _pipelines()
    ):
        statement.execute(conn, values)
        return
    unit.last.append(statement.bound(conn.dialect, values))


@functools.cache
def _pipelines() -> bool:
    """Whether psycopg's libpq has pipeline mode (14 or later; the binary package's
    does): without it the statements of :func:`last_before_commit` run at once."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _run_quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # the change has committed; the callback's failure is only logged
        log.exception("after_commit_failed")


def _commit(conn: Connection, last: Sequence[tuple[str, Any]] = ()) -> None:
    """Commit, or discard a connection whose commit failed; ``last``
    (:func:`last_before_commit`) sent with the COMMIT, in psycopg's pipeline mode, and
    SQLAlchemy's own commit after it finds nothing left to commit (psycopg sends no
    COMMIT outside a transaction).

    After a failed ``Connection.commit()`` SQLAlchemy forgets the transaction without
    rolling it back, and ``close()`` hands the connection back to its pool as it is: on
    SQLite still inside the transaction that holds the writer locks, its writes seen by
    the connection's next user and committed with that user's. (``Engine.begin()``
    rolls back itself.) Closing the connection for good ends the transaction.
    """
    try:
        if last:
            _pipelined_commit(conn, last)
        conn.commit()
    except BaseException:
        conn.invalidate()
        raise


_COMMIT = "COMMIT"


def _pipelined_commit(conn: Connection, last: Sequence[tuple[str, Any]]) -> None:
    """``last``'s statements and COMMIT in one round trip (see :func:`_commit`), each
    statement heard by the engine's ``before_cursor_execute`` / ``after_cursor_execute``
    listeners as :func:`_on_cursor` makes them heard. A listener's error is raised as
    itself; the driver's (the statements' or the COMMIT's, psycopg raises them together)
    as Core raises a failed commit's, without a statement."""
    fairy = conn.connection
    driver: Any = fairy.driver_connection
    kept = _kept_cursor(fairy) if conn.dialect.is_async else None
    cursor = kept if kept is not None else driver.cursor()
    statements = list(last)
    events = conn._has_events or conn.engine._has_events
    try:
        if events:
            for index, (sql, parameters) in enumerate(statements):
                for listen in conn.dispatch.before_cursor_execute:
                    sql, parameters = listen(conn, cursor, sql, parameters, None, False)
                statements[index] = (sql, parameters)
        if kept is not None:
            kept.commit_after(statements)
        else:
            with driver.pipeline():
                for sql, parameters in statements:
                    cursor.execute(sql, parameters)
                cursor.execute(_COMMIT)
        if events:
            for sql, parameters in statements:
                conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, False)
    except BaseException as error:
        _failed(conn, error, cursor, None, None)
    if kept is None:
        cursor.close()


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction: the unit of work's, else one committed on exit."""
    unit = _joined(engine)
    group = _grouped(engine)
    if unit is None:
        if group is not None:
            with _group_write(group) as conn:
                yield conn
            return
        with _connections(engine).begin() as conn:
            yield conn
        return
    if unit.connection is None:
        if group is not None:
            conn = group.open()
            _plain(conn, _SAVEPOINT_UNIT)
            unit.connection = conn
        else:
            unit.connection = _connections(engine).connect()
            unit.connection.begin()
    yield unit.connection


def own_transaction(engine: Engine) -> AbstractContextManager[Connection]:
    """A transaction of its own, committed on exit, never the unit of work's: for what
    must be durable whatever the caller does next (a CRL number, a nonce spent before
    a network call).

    Raises:
        RuntimeError: on SQLite, inside a unit of work that has written: the unit holds
            the one writer's lock, which this transaction would wait for in vain.
    """
    unit = _joined(engine)
    if unit is not None and unit.connection is not None and engine.dialect.name == "sqlite":
        raise RuntimeError("a transaction of its own after the unit of work's first write")
    group = _grouped(engine)
    if group is not None:  # committed with the group, before any answer of its members
        return _group_write(group)
    return _connections(engine).begin()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads: the unit of work's once it has written (in a commit group,
    the group's once a member has written), else a fresh one.

    A fresh one on PostgreSQL is in autocommit: a read outside a unit of work is then one
    round trip, not BEGIN, the SELECT and a ROLLBACK when it goes back to the pool. It
    sees what it would have seen in a transaction of its own: at READ COMMITTED (the
    default) every statement takes a new snapshot anyway.
    """
    unit = _joined(engine)
    if unit is not None and unit.connection is not None:
        yield unit.connection
        return
    group = _grouped(engine)
    if group is not None:
        if group.connection is not None:
            yield group.connection  # what the members wrote, as they will commit it
            return
        if group.reading is not None:
            yield group.reader()  # the read phase: what is committed
            return
    with _connections(engine).connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@contextmanager
def guarded(conn: Connection) -> Iterator[None]:
    """Let a statement that may fail on a constraint fail alone inside a shared
    transaction: a savepoint on PostgreSQL (a failed statement aborts the whole
    transaction there); SQLite undoes only the failed statement by itself."""
    if conn.dialect.name == "sqlite" or _unit.get() is None:
        yield
        return
    with conn.begin_nested():
        yield


# Commit groups (SQLite, on the event loop) ---------------------------------------------
#
# On SQLite the device plane runs inline on the event loop, one request's use case after
# another, each committing on its own: a commit, a pool checkout and the writer locks per
# registration. A commit group runs the use cases of the requests that are ready together
# and commits once for all of them, in two phases:
#
# - the read phase: each member runs, in a greenlet of its own, up to its first write.
#   What comes before it (the attestation: a signed request's signature, the device's
#   chain, the enrollment and the device read) reads what is committed, as a request
#   outside a group would, on one connection the members share outside a transaction
#   (it writes for the group after), and holds no writer lock: another
#   worker's group writes meanwhile. A member that never writes (a refusal with nothing
#   to journal) ends here and is answered at once;
# - the write phase: the group takes the writer locks, without blocking the event loop
#   when another process holds them (a thread waits until they are free; the loop goes
#   on reading requests), begins its transaction (BEGIN IMMEDIATE, so a member's reads
#   never see a snapshot older than its writes) and resumes the members one after
#   another where they stopped, in the order they came:
#   - each member's unit of work is a savepoint of the group's transaction (released
#     when it succeeds, rolled back to when it fails), and so is each write outside a
#     unit (a refusal's journal, a nonce spent on its own): a member's failure undoes
#     its own work only;
#   - from its first write on, every read of a member goes through the group's
#     connection, so it sees what the members before it wrote, as they will commit it.
#     What it decided in its read phase it decides again under its locks, as against a
#     concurrent request (the device's lock, the secret still unspent);
# - no answer of a member that wrote leaves before the group's commit: its result (or
#   refusal) is handed to its request once the commit has returned, and when the commit
#   fails every member that wrote gets the error. The after-commit callbacks run after
#   the group's commit;
# - when SQLite ends the transaction midway (a full disk, an I/O error) or a member's
#   failed work cannot be rolled back, the members that wrote in it fail, and the rest
#   resume in a new transaction of the same group.
#
# Only the group's runner writes on the loop's thread while its transaction is open;
# other threads (the admin API's pool) wait for the writer lock as for any writer.

_UNIT = "imprint_unit"
_WRITE = "imprint_write"
_SAVEPOINT_UNIT = f"SAVEPOINT {_UNIT}"
_RELEASE_UNIT = f"RELEASE SAVEPOINT {_UNIT}"

#: At most this many requests share a commit; the rest wait for the next group.
GROUP_LIMIT = 32

#: Called in a member's context as it resumes for the write phase, with the group's
#: connection (the read caches: what earlier members wrote is not to be cached for others).
group_member_hooks: list[Callable[[Connection], None]] = []


class _Group:
    __slots__ = (
        "_reader",
        "broken",
        "committed",
        "connection",
        "engine",
        "failure",
        "locked_at",
        "memo",
        "reading",
        "waited",
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: Connection | None = None
        self.committed: list[Callable[[], object]] = []
        #: A member's work could not be undone (its rollback to a savepoint failed).
        self.broken = False
        #: The group's runner, while the members run their read phase.
        self.reading: greenlet.greenlet | None = None
        #: Why the group's transaction could not begin.
        self.failure: BaseException | None = None
        self._reader: Connection | None = None
        #: When its write phase took the writer locks (``time.perf_counter``), and how
        #: long it waited for them first (None: they were free); for the observer.
        self.locked_at = 0.0
        self.waited: float | None = None
        #: What members noted of the group's own writes (:func:`group_memo`).
        self.memo: dict[str, Any] = {}

    def reader(self) -> Connection:
        """The read phase's connection, outside a transaction (each read sees what is
        committed), shared by the members, and the write phase's after: one pooled
        connection, whose page cache stays warm, instead of one a read."""
        if self._reader is None:
            self._reader = self.engine.connect()
        return self._reader

    def take_reader(self) -> Connection:
        """The read phase's connection, for the write phase (a new one if it had none)."""
        reader, self._reader = self._reader, None
        return reader if reader is not None else self.engine.connect()

    def open(self) -> Connection:
        """The group's connection, in its transaction. A member in its read phase waits
        here for the write phase (its greenlet hands control back to the group's runner)
        and reads, from then on, what the members before it wrote."""
        if self.connection is None and self.reading is not None:
            if holds_a_lock():
                # It cannot stop while it holds an in-process lock (the next member may
                # want it, on this same thread): the write phase begins now, the locks
                # taken as any writer takes them, and the rest of the group joins it.
                self.write_on(self.begun(self.take_reader(), None), None)
            else:
                self.reading.switch()
                if self.connection is not None:
                    for hook in group_member_hooks:
                        hook(self.connection)
        if self.connection is None:
            raise _GroupNotBegun() from self.failure
        return self.connection

    def begun(self, connection: Connection, waited: float | None) -> Connection:
        """``connection`` in a transaction holding the writer locks, waited for here if
        another holds them still (``waited``: how long the caller waited already)."""
        try:
            dbapi = connection.connection.dbapi_connection
            if isinstance(dbapi, _WriterConnection) and not dbapi.try_take():
                waiting = time.perf_counter()
                dbapi.take()
                waited = (waited or 0.0) + time.perf_counter() - waiting
            self.locked_at, self.waited = time.perf_counter(), waited
            _plain(connection, "BEGIN IMMEDIATE")
        except BaseException:
            connection.close()
            raise
        return connection

    def write_on(self, connection: Connection | None, failure: BaseException | None) -> None:
        """The write phase begins: on ``connection``, in its transaction, or with none
        because of ``failure`` (each member's first write then fails with it)."""
        self.reading = None
        self.broken = False
        self.connection = connection
        self.failure = failure
        self.memo = {}  # a new transaction: nothing of an earlier one's writes holds

    def intact(self) -> bool:
        """Whether the group's transaction is still open: SQLite ends a transaction by
        itself on some errors (a full disk, an I/O error), and what the members before
        wrote is then gone. Nor is it one to commit once a member's failed work could not
        be rolled back."""
        if self.broken:
            return False
        if self.connection is None:
            return True
        dbapi = self.connection.connection.dbapi_connection
        return dbapi is not None and bool(dbapi.in_transaction)

    def commit(self) -> None:
        if self.connection is not None:
            if not self.intact():
                raise _GroupLost()
            _commit(self.connection)

    def close(self) -> None:
        for conn in (self.connection, self._reader):
            if conn is not None:
                conn.close()  # rolls back what was not committed
        self.connection = self._reader = None


class _GroupLost(SQLAlchemyError):
    """The database ended a commit group's transaction before its commit."""

    def __init__(self) -> None:
        super().__init__("the database rolled back the commit group's transaction")


class _GroupNotBegun(SQLAlchemyError):
    """A commit group's transaction could not begin (its cause is chained)."""

    def __init__(self) -> None:
        super().__init__("the commit group's transaction could not begin")


_group: ContextVar[_Group | None] = ContextVar("imprint_commit_group", default=None)


def _grouped(engine: Engine) -> _Group | None:
    group = _group.get()
    return group if group is not None and group.engine is engine else None


def group_memo(conn: Connection) -> dict[str, Any] | None:
    """Where a member may note what the commit group's own writes on ``conn`` left (the
    audit chain's tail, say) for the next member: while a group writes, nobody else
    does, so the note stays true for as long as the group's transaction. Undoing part
    of its work empties it, and each new transaction (the members left when SQLite
    ended one midway run in the next) starts with an empty one. None when ``conn`` is
    not a commit group's connection, or its transaction is no longer whole."""
    group = _group.get()
    if group is None or group.connection is not conn or not group.intact():
        return None
    return group.memo


def _roll_back_to(group: _Group, name: str) -> None:
    """Undo a member's work since the savepoint ``name``; when that fails, the group's
    transaction holds work that must not commit: the group is lost."""
    assert group.connection is not None
    group.memo.clear()  # it may describe what is undone now
    try:
        _plain(group.connection, f"ROLLBACK TO SAVEPOINT {name}")
        _plain(group.connection, f"RELEASE SAVEPOINT {name}")
    except BaseException:
        group.broken = True
        raise


@contextmanager
def _group_write(group: _Group) -> Iterator[Connection]:
    conn = group.open()
    _plain(conn, f"SAVEPOINT {_WRITE}")
    try:
        yield conn
    except BaseException:
        _roll_back_to(group, _WRITE)
        raise
    _plain(conn, f"RELEASE SAVEPOINT {_WRITE}")


#: A request waiting for its group: its work, its answer, a copy of its context.
_Ready = tuple[Callable[[], Any], "asyncio.Future[Any]", contextvars.Context]


class _Member:
    __slots__ = ("error", "future", "result", "runner")

    def __init__(self, group: _Group, ready: _Ready) -> None:
        work, self.future, context = ready
        self.result: Any = None
        self.error: BaseException | None = None
        # Its own greenlet, in a copy of its request's context (where its group and its
        # unit of work are set): it stops at its first write until the group's write phase.
        self.runner = greenlet.greenlet(functools.partial(self._run, group, work))
        self.runner.gr_context = context

    def _run(self, group: _Group, work: Callable[[], Any]) -> None:
        _group.set(group)
        if group.connection is not None:  # the write phase began early (see open())
            for hook in group_member_hooks:
                hook(group.connection)
        try:
            self.result = work()
        except BaseException as exc:  # raised in its request's task once it is answered
            self.error = exc

    @property
    def done(self) -> bool:
        return bool(self.runner.dead)

    def answer(self) -> None:
        if self.future.cancelled():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


#: How often a group waiting for another process's writer lock looks again (seconds).
_LOCK_RETRY = 0.001


class GroupObserver(Protocol):
    """Told of each commit group that wrote (:func:`observe_groups`), once its members
    have their answers."""

    def group_committed(self, members: int, lock_wait: float | None, held: float) -> None:
        """``members`` committed together; the group waited ``lock_wait`` seconds for
        writer locks another process or thread held (None: they were free), and held
        them ``held`` seconds, from taking them to the end of its commit (a write phase
        that a member holding an in-process lock began early included)."""


_observers: WeakKeyDictionary[Engine, GroupObserver] = WeakKeyDictionary()


def observe_groups(engine: Engine, observer: GroupObserver) -> None:
    """Tell ``observer`` of every commit group of ``engine`` from now on (one observer
    an engine: the runtime's metrics)."""
    _observers[engine] = observer


class _Committer:
    """The commit groups of one engine on one event loop."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self.waiting: list[_Ready] = []
        self.running = False
        self._task: asyncio.Task[None] | None = None
        #: Groups committed, the members they carried, and the times a group found the
        #: writer locks taken (for tests and the curious).
        self.groups = 0
        self.members = 0
        self.lock_waits = 0

    async def run(self, work: Callable[[], T]) -> T:
        future: asyncio.Future[T] = self.loop.create_future()
        self.waiting.append((work, future, contextvars.copy_context()))
        if not self.running:
            self.running = True
            # In a context of its own, not the first member's request's.
            self._task = self.loop.create_task(self._run_groups(), context=contextvars.Context())
        return await future

    async def _run_groups(self) -> None:
        try:
            while self.waiting:
                ready = self.waiting[:GROUP_LIMIT]
                del self.waiting[:GROUP_LIMIT]
                await self._run_group(ready)
        finally:
            self.running = False

    async def _run_group(self, ready: list[_Ready]) -> None:
        group = _Group(self.engine)
        group.reading = greenlet.getcurrent()
        writers: list[_Member] = []
        early: list[_Member] = []  # ran to their end in a write phase begun early
        for one in ready:
            if one[1].cancelled():  # its request is gone: not run
                continue
            member = _Member(group, one)
            member.runner.switch()  # its read phase: to its end or its first write
            if not member.done:
                writers.append(member)
            elif group.connection is None:
                member.answer()  # it wrote nothing: nothing to wait for
            else:
                early.append(member)
        if not writers and not early:
            group.close()
            for callback in group.committed:
                _run_quietly(callback)
        while writers or early:
            writers = await self._write_phase(group, writers, early)
            early = []

    async def _write_phase(
        self, group: _Group, writers: list[_Member], early: list[_Member]
    ) -> list[_Member]:
        """Resume ``writers`` in one transaction and commit it (with what the ``early``
        members wrote in it, when it began early); the members that did not run because
        the transaction ended midway (they go into the next one)."""
        if group.connection is None:
            try:
                group.write_on(await self._locked(group, group.take_reader()), None)
            except BaseException as exc:
                # Cancelled while it waited for the lock, too: the members are answered
                # with the group's failure and the runner goes on, since the requests
                # queued behind this group would otherwise wait until another request
                # came and started a new runner.
                group.write_on(None, exc)
        observed: tuple[int, float | None, float] | None = None
        ran: list[_Member] = list(early)
        undone: list[_Member] = []
        try:
            for at, member in enumerate(writers):
                if not group.intact():  # lost midway: the rest go into the next one
                    undone = writers[at:]
                    break
                member.runner.switch()  # runs to its end
                ran.append(member)
            group.commit()
        except Exception as exc:  # the commit failed: no member's work is durable
            for member in ran:
                member.error, member.result = exc, None
            undone = [member for member in writers if member not in ran]
            group.committed = []
        else:
            if group.connection is not None:
                self.groups += 1
                self.members += len(ran)
                observed = (len(ran), group.waited, time.perf_counter() - group.locked_at)
            for callback in group.committed:
                _run_quietly(callback)
            group.committed = []
        finally:
            group.close()
        for member in ran:
            member.answer()
        # The observer is told after the answers, so that it never holds one up.
        observer = _observers.get(self.engine)
        if observed is not None and observer is not None:
            try:
                observer.group_committed(*observed)
            except Exception:
                log.exception("commit_group_observer_failed")
        return undone

    async def _locked(self, group: _Group, connection: Connection) -> Connection:
        """``connection`` in a transaction that holds the writer locks, taken without
        blocking the loop while another process (a second worker, the CLI) or thread
        holds them (how long that took kept on ``group``)."""
        waited = None
        try:
            dbapi = connection.connection.dbapi_connection
            if isinstance(dbapi, _WriterConnection) and not dbapi.try_take():
                self.lock_waits += 1
                waiting = time.perf_counter()
                deadline = self.loop.time() + dbapi.lock_timeout
                # Tried again from the loop itself every millisecond, between whatever
                # else it runs: a try is a lock acquire and a non-blocking flock(2),
                # microseconds. (A thread of the executor that waited instead cost a hop
                # a wait, and its tries came when it got the GIL back, up to the switch
                # interval, 5 ms, after each sleep while the loop computed: the lock lay
                # free meanwhile. bench/README.md, step 39.)
                while not dbapi.try_take() and self.loop.time() <= deadline:
                    await asyncio.sleep(_LOCK_RETRY)
                waited = time.perf_counter() - waiting
        except BaseException:
            connection.close()
            raise
        # Taken, or past the deadline: then waited for as any writer waits.
        return group.begun(connection, waited)


_committers: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Engine, _Committer]] = (
    WeakKeyDictionary()
)


def committer(engine: Engine, loop: asyncio.AbstractEventLoop) -> _Committer:
    """The commit groups of ``engine`` on ``loop``."""
    of_loop = _committers.get(loop)
    if of_loop is None:
        of_loop = _committers[loop] = {}
    found = of_loop.get(engine)
    if found is None:
        found = of_loop[engine] = _Committer(engine, loop)
    return found


async def grouped(engine: Engine, work: Callable[[], T]) -> T:
    """``work()`` on the event loop as a member of a commit group (see above): its store
    calls on ``engine`` share one transaction with the other requests ready now, and it
    returns (or raises) once that transaction has committed (or at once, if it wrote
    nothing)."""
    return await committer(engine, asyncio.get_running_loop()).run(work)


# One at a time per key --------------------------------------------------------------------
#
# Some decisions must not interleave: two requests for one device each reading "no
# certificate yet" and each issuing one, or two audit entries each chaining onto the same
# predecessor. ``serialized`` makes a transaction the only one holding a key until it ends.
# On PostgreSQL that is a transaction-scoped advisory lock on the key's hash (it works for
# rows that do not exist yet, and other keys do not wait). SQLite has one writer at a time
# anyway: taking its write lock now, before the transaction's first read, is enough.

_SQLITE_TAKE_WRITE_LOCK = text("UPDATE crl_numbers SET number = number WHERE 0 = 1")
_PG_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def serialized(conn: Connection, name: str) -> None:
    """Hold ``name`` until ``conn``'s transaction ends; wait while another holds it.

    Call it first in a unit of work (through :func:`writing`), before the reads the
    decision depends on.
    """
    if conn.dialect.name == "sqlite":
        # A connection that has written in this transaction holds the write lock already
        # (the device's lock, then the audit chain's, in one unit of work).
        if not getattr(conn.connection.dbapi_connection, "holding", False):
            conn.execute(_SQLITE_TAKE_WRITE_LOCK)
    else:
        conn.execute(_PG_ADVISORY_LOCK, {"key": lock_key(name)})
