"""SQLite checkpoints off the request path: a server's pooled connections leave the WAL
to a thread of their own (``store.db.Checkpointer``) instead of copying it back into
the database file on the commit that crosses 1,000 pages."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from imprint.store.db import Checkpointer, create_engine
from tests.integration.conftest import Service

PAGE = 4096


def _write_pages(engine: Engine, count: int) -> None:
    for _ in range(count):  # one page of its own per commit
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (x) VALUES (randomblob(3000))"))


def _wal_pages(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size // PAGE


def _new(database: Path) -> Engine:
    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x BLOB)"))
    return engine


def test_connections_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    plain, served = tmp_path / "plain.db", tmp_path / "served.db"
    plain_engine, served_engine = _new(plain), _new(served)
    # A checkpointer that does not come round during the test: only the connections'
    # own checkpoints could copy the WAL back.
    idle = Checkpointer.start(served_engine, every=3600)
    assert idle is not None
    try:
        with served_engine.connect() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10_000
        with plain_engine.connect() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
        _write_pages(plain_engine, 1500)
        _write_pages(served_engine, 1500)
        # The plain engine's commit past 1,000 pages checkpointed and the WAL started
        # over; the served engine's WAL holds every page written.
        assert _wal_pages(plain) < 1400
        assert _wal_pages(served) >= 1500
    finally:
        idle.stop()
        plain_engine.dispose()
        served_engine.dispose()


def test_the_checkpointer_copies_the_wal_back(tmp_path: Path) -> None:
    database = tmp_path / "served.db"
    engine = _new(database)
    checkpointer = Checkpointer.start(engine, every=0.05)
    assert checkpointer is not None
    try:
        before = database.stat().st_size
        _write_pages(engine, 200)
        rounds = checkpointer.rounds
        deadline = time.monotonic() + 10
        while checkpointer.rounds < rounds + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.rounds >= rounds + 2
        # The pages are in the database file now, copied there by the checkpointer's
        # rounds: 200 pages are far below the connections' own threshold (10,000).
        assert database.stat().st_size - before >= 190 * PAGE
    finally:
        checkpointer.stop()
        engine.dispose()
    assert checkpointer.rounds >= 2


def test_no_checkpointer_for_postgresql() -> None:
    assert Checkpointer.start(create_engine("postgresql://nobody@127.0.0.1:1/none")) is None


def test_the_server_runs_one(service: Service) -> None:
    if service.runtime.engine.dialect.name != "sqlite":
        return
    with service.runtime.engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10_000
