"""Cache coherence across processes sharing a SQLite file.

Another process is played by a plain sqlite3 connection: it writes, and counts its change
in ``cache_changes`` the way a process does; what this process's caches answer is
checked against the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine

from imprint.attestation.revocation import DeniedCertificate
from imprint.errors import Conflict
from imprint.store import cache
from imprint.store.cache import ReadCache, listening, look_now, on_change
from imprint.store.db import create_engine
from imprint.store.deny_list import SqlDenyList


@pytest.fixture
def shared(migrated_database_url: str) -> Iterator[tuple[Engine, Path]]:
    """An engine on a migrated SQLite file, and the file."""
    engine = create_engine(migrated_database_url)
    yield engine, Path(str(engine.url.database))
    engine.dispose()


def asleep(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> cache._SqliteListener:
    """The listener of ``engine``'s file, its thread made to look no more (its next wait
    is an hour long, and the one under way has ended)."""
    listener = cache._Listener.of(cache._database(engine))
    assert isinstance(listener, cache._SqliteListener)
    looks = listener._looks
    monkeypatch.setattr(cache, "POLL_SECONDS", 3600.0)
    _wait(lambda: listener._looks > looks, "the look that ends the wait under way")
    return listener


def _wait(condition: Callable[[], bool], what: str, seconds: float = 10) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def bump_version(conn: sqlite3.Connection) -> None:
    """Move the file's ``user_version``, as a counted change does in its transaction."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute(f"PRAGMA user_version = {version + 1}")


class Source:
    """What the cached loads read: a value in a table another process may change."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.loads = 0
        with self._connect() as conn:
            conn.execute("CREATE TABLE coherence (v int)")
            conn.execute("INSERT INTO coherence VALUES (1)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=5)

    def load(self) -> int:
        self.loads += 1
        conn = self._connect()
        try:
            return int(conn.execute("SELECT v FROM coherence").fetchone()[0])
        finally:
            conn.close()

    def change(self, value: int, *, counted: bool, kind: str = "test") -> None:
        """Another process's write of ``kind``, counted as a process counts it."""
        conn = self._connect()
        try:
            with conn:  # one transaction
                conn.execute("UPDATE coherence SET v = ?", (value,))
                if counted:
                    conn.execute(
                        "INSERT INTO cache_changes (kind, changes) VALUES (?, 1)"
                        " ON CONFLICT (kind) DO UPDATE SET changes = changes + 1",
                        (kind,),
                    )
                    bump_version(conn)
        finally:
            conn.close()


def test_a_change_counted_by_another_process_is_seen_within_100_ms(
    shared: tuple[Engine, Path],
) -> None:
    engine, path = shared
    source = Source(path)
    kind = ReadCache(engine, "test", ttl=3600)  # only a counted change can make it forget
    assert listening(engine)
    assert kind.get("v", source.load) == 1
    assert kind.get("v", source.load) == 1
    assert source.loads == 1  # the second answer came from memory
    source.change(2, counted=False)
    time.sleep(3 * cache.POLL_SECONDS)
    assert kind.get("v", source.load) == 1  # not counted: stale, by design
    source.change(3, counted=True, kind="another-kind")
    time.sleep(3 * cache.POLL_SECONDS)
    assert kind.get("v", source.load) == 1  # another kind's change: this one is kept
    source.change(4, counted=True)
    took = _wait(lambda: kind.get("v", source.load) == 4, "the counted change", 5)
    # Looked for every 50 ms; the bound leaves room for a busy machine's scheduling.
    assert took < 0.25, f"seen after {took * 1000:.0f} ms"


def test_a_write_through_the_store_is_counted_in_its_transaction(
    shared: tuple[Engine, Path],
) -> None:
    """What a process writes tells the others: its kind's count moves when, and only
    when, the write commits."""
    engine, path = shared
    deny_list = SqlDenyList(engine)
    fingerprint = "ab" * 32

    def entry(reason: str) -> DeniedCertificate:
        return DeniedCertificate(fingerprint, reason, datetime.now(UTC))

    def counted() -> int | None:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute(
                "SELECT changes FROM cache_changes WHERE kind = 'deny_list'"
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else int(row[0])

    assert counted() is None
    deny_list.add(entry("lost on the road"))
    assert counted() == 1
    with pytest.raises(Conflict):
        deny_list.add(entry("the same again"))
    assert counted() == 1  # rolled back with the write it told of
    deny_list.remove(fingerprint)
    assert counted() == 2


def test_a_callback_hears_of_another_processs_change(shared: tuple[Engine, Path]) -> None:
    engine, path = shared
    source = Source(path)
    heard: list[float] = []
    on_change(engine, "client_cas", lambda: heard.append(time.monotonic()))
    source.change(5, counted=True, kind="deny_list")
    time.sleep(3 * cache.POLL_SECONDS)
    assert heard == []  # another kind
    source.change(6, counted=True, kind="client_cas")
    changed = time.monotonic()  # committed
    _wait(lambda: bool(heard), "the callback")
    assert heard[0] - changed < 0.25


def test_a_process_that_cannot_look_reads_through_until_it_can(
    shared: tuple[Engine, Path],
) -> None:
    engine, path = shared
    source = Source(path)
    kind = ReadCache(engine, "test", ttl=3600)
    assert kind.get("v", source.load) == 1
    # A change was counted, and the counts cannot be read (a restore in progress, say):
    # the listener gives up...
    conn = sqlite3.connect(path)
    try:
        conn.execute("ALTER TABLE cache_changes RENAME TO cache_changes_away")
        bump_version(conn)
        conn.commit()
        _wait(lambda: not listening(engine), "the process to notice it cannot look")
        # ...and meanwhile another process changes the value without a count it can see.
        source.change(7, counted=False)
        before = source.loads
        assert kind.get("v", source.load) == 7
        assert kind.get("v", source.load) == 7
        assert source.loads == before + 2  # nothing from memory while blind
        conn.execute("ALTER TABLE cache_changes_away RENAME TO cache_changes")
        conn.commit()
    finally:
        conn.close()
    _wait(lambda: listening(engine), "the listener to look again")
    assert kind.get("v", source.load) == 7
    loads = source.loads
    assert kind.get("v", source.load) == 7
    assert source.loads == loads  # cached again


def test_sqlite_in_memory_has_no_listener() -> None:
    engine = sqlalchemy.create_engine("sqlite://")  # no other process can open it
    try:
        ReadCache(engine, "test")
        assert listening(engine)
        assert cache._Listener.of(cache._database(engine)) is None
    finally:
        engine.dispose()


def test_a_look_now_hears_at_once_what_the_thread_has_not_looked_for(
    shared: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, path = shared
    source = Source(path)
    kind = ReadCache(engine, "test", ttl=3600)
    heard: list[str] = []
    on_change(engine, "test", lambda: heard.append("test"))
    listener = asleep(engine, monkeypatch)
    assert kind.get("v", source.load) == 1
    assert look_now(engine) == set()  # nothing committed since
    source.change(8, counted=True)
    assert kind.get("v", source.load) == 1  # not heard of yet
    before = cache.generation(engine, "test")
    assert look_now(engine) == {"test"}
    assert cache.generation(engine, "test") > before
    assert kind.get("v", source.load) == 8  # forgotten before look_now answered
    assert heard == []  # a request never waits for a callback: the thread owes it
    listener.look()  # the thread's next look
    assert heard == ["test"]
    assert look_now(engine) == set()  # heard once


def test_a_look_reads_the_counts_only_after_a_counted_change(
    shared: tuple[Engine, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request looks, and the device plane commits all the time without counting:
    such a commit costs a look one PRAGMA, not the counts' SELECT as well."""
    engine, path = shared
    source = Source(path)
    ReadCache(engine, "test", ttl=3600)
    listener = asleep(engine, monkeypatch)
    assert listener._conn is not None
    statements: list[str] = []
    listener._conn.set_trace_callback(statements.append)
    source.change(2, counted=False)
    assert look_now(engine) == set()
    assert statements == ["PRAGMA user_version"]
    statements.clear()
    source.change(3, counted=True)
    assert look_now(engine) == {"test"}
    assert statements == ["PRAGMA user_version", "SELECT kind, changes FROM cache_changes"]
