"""Cache coherence across processes on PostgreSQL, and one leader per duty.

Another node is played by a plain psycopg connection: it writes and notifies the way a
node does, and what this process's caches answer is checked against the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine, make_url

from imprint.leadership import OUTBOX, Leadership
from imprint.settings import Settings
from imprint.store import cache
from imprint.store.cache import CHANNEL, ReadCache, listening
from imprint.store.db import create_engine
from tests.conftest import PostgresServer
from tests.integration.conftest import start_service

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_server: PostgresServer, postgres_database: str) -> str:
    return postgres_server.url(postgres_database)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _wait(condition: object, what: str, seconds: float = 10) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Source:
    """What the cached loads read: a value in a table another node may change."""

    def __init__(self, url: str) -> None:
        self._url = _plain(url)
        self.loads = 0
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS coherence (v int)")
            conn.execute("DELETE FROM coherence")
            conn.execute("INSERT INTO coherence VALUES (1)")

    def load(self) -> int:
        self.loads += 1
        with psycopg.connect(self._url) as conn:
            row = conn.execute("SELECT v FROM coherence").fetchone()
        assert row is not None
        return int(row[0])

    def change(self, value: int, *, notify: bool) -> None:
        """Another node's write of the kind ``test``, notified as a node does."""
        with psycopg.connect(self._url) as conn:
            conn.execute("UPDATE coherence SET v = %s", (value,))
            if notify:
                conn.execute("SELECT pg_notify(%s, 'test')", (CHANNEL,))


def test_a_change_notified_by_another_node_is_seen_within_100_ms(
    engine: Engine, pg_url: str
) -> None:
    source = Source(pg_url)
    kind = ReadCache(engine, "test", ttl=3600)  # only a notification can make it forget
    assert listening(engine)
    assert kind.get("v", source.load) == 1
    assert kind.get("v", source.load) == 1
    assert source.loads == 1  # the second answer came from memory
    source.change(2, notify=False)
    assert kind.get("v", source.load) == 1  # without a notification: stale, by design
    source.change(3, notify=True)
    took = _wait(lambda: kind.get("v", source.load) == 3, "the notified change", 5)
    assert took < 0.1, f"seen after {took * 1000:.0f} ms"


def test_a_process_that_lost_its_listener_reads_through_until_it_is_back(
    engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Source(pg_url)
    kind = ReadCache(engine, "test", ttl=3600)
    assert kind.get("v", source.load) == 1
    listener = cache._Listener.of(cache._database(engine))
    assert listener is not None
    # The network to the database is cut for the listener: it cannot come back...
    working = listener._conninfo
    monkeypatch.setattr(listener, "_conninfo", "postgresql://postgres@127.0.0.1:1/none")
    with psycopg.connect(_plain(pg_url), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'imprint-cache-listener'"
        )
    _wait(lambda: not listening(engine), "the process to notice its listener is gone")
    # ...and meanwhile another node changes the value: no notification can arrive.
    source.change(4, notify=False)
    before = source.loads
    assert kind.get("v", source.load) == 4
    assert kind.get("v", source.load) == 4
    assert source.loads == before + 2  # nothing from memory while deaf
    monkeypatch.setattr(listener, "_conninfo", working)
    _wait(lambda: listening(engine), "the listener to reconnect")
    assert kind.get("v", source.load) == 4
    loads = source.loads
    assert kind.get("v", source.load) == 4
    assert source.loads == loads  # cached again


def test_one_leader_per_duty_and_a_takeover_when_it_dies(engine: Engine, pg_url: str) -> None:
    first, second = Leadership(engine), Leadership(engine)
    try:
        assert first.leads(OUTBOX)
        assert not second.leads(OUTBOX)
        assert first.leads(OUTBOX)  # still: the lock lives with its session
        assert second.leads("ocsp")  # another duty, another leader
        # The leader's session dies (kill -9 of its process, as PostgreSQL sees it).
        assert first._conn is not None
        leader_pid = first._conn.info.backend_pid
        with psycopg.connect(_plain(pg_url), autocommit=True) as admin:
            # With a timeout, the call returns once the backend has exited (and so has
            # released its session's locks); without one it only sends the signal.
            ended = admin.execute(
                "SELECT pg_terminate_backend(%s, 10000)", (leader_pid,)
            ).fetchone()
            assert ended == (True,)
        assert second.leads(OUTBOX)
        assert not first.leads(OUTBOX)
    finally:
        first.close()
        second.close()


@pytest.mark.both_databases
def test_readyz_is_not_ready_while_the_database_is_unreachable(
    settings: Settings, tmp_path: Path, backend: str, postgres_server: PostgresServer
) -> None:
    """What HAProxy's health check sees: 503 while the node cannot reach PostgreSQL,
    200 again once it can, without a restart."""
    if backend != "postgresql":
        pytest.skip("about PostgreSQL")
    database = make_url(settings.database_url()).database
    admin_url = postgres_server.url("postgres", driver="postgresql")

    def allow(allowed: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allowed}')
            if not allowed:
                admin.execute(
                    # The timeout makes the call wait until each backend has exited.
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                    " WHERE datname = %s",
                    (database,),
                )

    for service in start_service(settings, tmp_path):
        with service.client() as client:
            assert client.get("/readyz").status_code == 200
            allow(False)
            try:
                down = client.get("/readyz")
                assert down.status_code == 503, down.text
                assert down.json()["code"] == "database_unavailable"
            finally:
                allow(True)
            _wait(lambda: client.get("/readyz").status_code == 200, "ready again", 30)
