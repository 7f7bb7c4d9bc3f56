"""The audit log's hash chain on SQLite and PostgreSQL: it verifies as written, names
the first entry changed, deleted around or moved behind imprint's back, holds under
concurrent writers, and migration 0013 chains the entries written before it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from sqlalchemy import column, select, table, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError, StatementError

from imprint.audit import GENESIS, AuditEntry, ChainBreak, chain_time, records, verify_chain
from imprint.store import audit as log_module
from imprint.store import db
from imprint.store.audit import SqlAuditLog
from imprint.store.tables import UTCDateTime, audit_log

# Storage (the chain, concurrent writers, a migration): every test here runs on
# PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases


def fill(log: SqlAuditLog, count: int) -> None:
    for n in range(1, count + 1):
        log.write(
            AuditEntry(
                actor=f"user:ops-{n}",
                action="device.revoke",
                target_type="device",
                target_id=f"d-{n}",
                org_id="acme",
                details={"reason": "keyCompromise", "n": n, "password": "hunter2"},
            )
        )


def hashes(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(audit_log.c.id, audit_log.c.hash)).all())


def tamper(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_an_untouched_log_verifies_and_reports_its_head(engine: Engine) -> None:
    log = SqlAuditLog(engine)
    assert verify_chain(log) == verify_chain(log, page_size=1)
    empty = verify_chain(log)
    assert (empty.ok, empty.entries, empty.head, empty.broken) == (True, 0, GENESIS, None)
    fill(log, 7)
    report = verify_chain(log, page_size=3)  # pages of 3, 3 and 1
    assert (report.ok, report.entries, report.broken) == (True, 7, None)
    stored = hashes(engine)
    assert report.head == stored[max(stored)]
    assert len(set(stored.values())) == 7
    chain = list(records(log, page_size=2))
    assert [r.prev_hash for r in chain] == [GENESIS, *(r.hash for r in chain[:-1])]
    assert all(r.hash == r.chained_to(r.prev_hash or "") for r in chain)
    assert "hunter2" not in "".join(r.details for r in chain)


def test_times_and_text_survive_the_database_exactly(engine: Engine) -> None:
    log = SqlAuditLog(engine)
    odd = datetime(2030, 7, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-9)))
    for at in (odd, datetime(2030, 1, 1, tzinfo=UTC), datetime.now(UTC)):
        log.write(
            AuditEntry(
                actor="user:zoë@例え.example",
                action="org.create",
                target_type="org",
                at=at,
                details={"name": "Ünïcode \u2603", "nested": {"b": 1, "a": [1.5, None]}},
            )
        )
    first = next(records(log))
    assert first.at == "2030-07-02T08:59:59.999999Z" == chain_time(odd)
    assert verify_chain(log).ok


def test_text_that_reads_like_an_id_leaves_the_hash_alone(engine: Engine) -> None:
    """PostgreSQL hashes an entry around the id it draws (``AuditRecord.around_id``): a
    value that spells the id's key must not be taken for it, and ids of any length fit."""
    log = SqlAuditLog(engine)
    fill(log, 9)  # the next ids have two digits
    log.write(
        AuditEntry(
            actor='user:"id":-1',
            action="test.id",
            target_type="n",
            target_id='{"id":-1}',
            details={"id": -1, "note": '"id":-1,"id":'},
        )
    )
    fill(log, 2)
    report = verify_chain(log)
    assert (report.ok, report.entries) == (True, 12)
    entry = next(r for r in records(log) if r.action == "test.id")
    assert entry.id == 10
    before, after = replace(entry, id=0).around_id()
    assert before + b"10" + after == entry.canonical()


@pytest.mark.parametrize(
    ("statements", "broken"),
    [
        (["UPDATE audit_log SET details = '{\"reason\": \"superseded\"}' WHERE id = 3"],
         ChainBreak(3, "content_changed")),
        (["UPDATE audit_log SET actor = 'user:someone-else' WHERE id = 4"],
         ChainBreak(4, "content_changed")),
        (["UPDATE audit_log SET outcome = 'failure' WHERE id = 2"],
         ChainBreak(2, "content_changed")),
        (["UPDATE audit_log SET hash = prev_hash WHERE id = 5"], ChainBreak(5, "content_changed")),
        (["DELETE FROM audit_log WHERE id = 3"], ChainBreak(4, "predecessor_mismatch")),
        (["DELETE FROM audit_log WHERE id = 1"], ChainBreak(2, "predecessor_mismatch")),
        (
            [
                "UPDATE audit_log SET id = 100 WHERE id = 3",
                "UPDATE audit_log SET id = 3 WHERE id = 4",
                "UPDATE audit_log SET id = 4 WHERE id = 100",
            ],
            ChainBreak(3, "predecessor_mismatch"),
        ),
        (["UPDATE audit_log SET hash = NULL WHERE id = 6"], ChainBreak(6, "hash_missing")),
    ],
    ids=["details", "actor", "outcome", "hash", "delete-middle", "delete-first", "swap", "null"],
)  # fmt: skip
def test_tampering_names_the_first_broken_entry(
    engine: Engine, statements: list[str], broken: ChainBreak
) -> None:
    log = SqlAuditLog(engine)
    fill(log, 6)
    assert verify_chain(log).ok
    tamper(engine, *statements)
    report = verify_chain(log, page_size=2)
    assert report.broken == broken
    assert not report.ok
    assert report.head is None
    assert report.entries == len([i for i in hashes(engine) if i <= broken.id])


def test_an_entry_with_a_forged_hash_still_breaks_at_its_successor(engine: Engine) -> None:
    """Rewriting an entry and its hash moves the break to the next entry."""
    log = SqlAuditLog(engine)
    fill(log, 4)
    forged = next(r for r in records(log) if r.id == 2)
    rewritten = replace(forged, actor="user:innocent")
    new_hash = rewritten.chained_to(forged.prev_hash or "")
    with engine.begin() as conn:
        conn.execute(
            audit_log.update()
            .where(audit_log.c.id == 2)
            .values(actor="user:innocent", hash=new_hash)
        )
    assert verify_chain(log).broken == ChainBreak(3, "predecessor_mismatch")


def test_deleting_the_newest_entry_is_not_seen_without_an_anchor(engine: Engine) -> None:
    log = SqlAuditLog(engine)
    fill(log, 3)
    anchor = verify_chain(log).head
    tamper(engine, "DELETE FROM audit_log WHERE id = 3")
    report = verify_chain(log)
    assert report.ok  # the chain alone cannot tell: the head kept elsewhere can
    assert report.head != anchor
    assert report.entries == 2


def test_entries_of_one_unit_of_work_chain_in_order(engine: Engine) -> None:
    log = SqlAuditLog(engine)
    fill(log, 1)
    with db.unit_of_work(engine):
        fill(log, 3)  # the second reads the first's hash before either commits
    report = verify_chain(log)
    assert (report.ok, report.entries) == (True, 4)


def test_concurrent_writers_never_share_a_predecessor(engine: Engine) -> None:
    """8 threads of 25 entries, every fifth in a unit of work that is rolled back (a
    gap in the ids on PostgreSQL): the chain verifies and holds every committed entry."""
    log = SqlAuditLog(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def abandon(entry: AuditEntry) -> None:
        with db.unit_of_work(engine):
            log.write(entry)
            raise RuntimeError("rolled back")

    def writer(worker: int) -> None:
        try:
            start.wait()
            for n in range(25):
                entry = AuditEntry(
                    actor=f"worker-{worker}", action="test.write", target_type="n", target_id=str(n)
                )
                if n % 5 == 4:
                    with pytest.raises(RuntimeError):
                        abandon(entry)
                else:
                    with db.unit_of_work(engine) if n % 2 else nullcontext():
                        log.write(entry)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    report = verify_chain(log, page_size=50)
    assert (report.ok, report.entries, report.broken) == (True, 8 * 20, None)
    prevs = [r.prev_hash for r in records(log)]
    assert len(set(prevs)) == len(prevs)


def test_migration_chains_the_entries_written_before_it(engine: Engine) -> None:
    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0012")
    base = datetime(2029, 12, 31, 23, 0, 0, 123456, tzinfo=UTC)
    before_0013 = table(  # audit_log as 0012 left it
        "audit_log",
        *(column(name) for name in ("actor", "action", "target_type", "outcome", "details")),
        column("at", UTCDateTime),
    )
    with engine.begin() as connection:
        for n in range(5):
            connection.execute(
                before_0013.insert().values(
                    at=base + timedelta(minutes=n),
                    actor=f"cli:root-{n}",
                    action="org.create",
                    target_type="org",
                    outcome="success",
                    details='{"name": "Acme"}',
                )
            )
    db.upgrade(engine)
    log = SqlAuditLog(engine)
    assert verify_chain(log, page_size=2) == verify_chain(log)
    assert verify_chain(log).entries == 5
    fill(log, 2)  # new entries chain onto the migrated ones
    report = verify_chain(log)
    assert (report.ok, report.entries) == (True, 7)
    assert next(records(log)).at == "2029-12-31T23:00:00.123456Z"


def test_entries_follow_on_when_the_id_column_has_lost_its_sequence(
    engine: Engine, backend: str
) -> None:
    """A PostgreSQL schema restored without the sequence's ownership (or made by hand):
    the next id is the tail's plus one, and the chain goes on unbroken."""
    if backend != "postgresql":
        pytest.skip("SQLite numbers rows itself")
    log = SqlAuditLog(engine)
    fill(log, 2)
    tamper(
        engine,
        "ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT",
        "ALTER SEQUENCE audit_log_id_seq OWNED BY NONE",
    )
    fill(log, 2)
    assert sorted(hashes(engine)) == [1, 2, 3, 4]
    report = verify_chain(log)
    assert (report.ok, report.entries) == (True, 4)


def test_a_writer_that_waited_for_the_chain_chains_onto_the_entry_it_waited_for(
    engine: Engine,
) -> None:
    """A writer blocked on the chain's lock reads the tail only once it holds it, and so
    chains onto the entry committed while it waited (PostgreSQL: a tail read in the same
    statement's snapshot as the lock's wait would still see the entry before it)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writer lock is taken before the transaction's first read")
    log = SqlAuditLog(engine)
    fill(log, 1)
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.unit_of_work(engine):
                log.write(AuditEntry(actor="first", action="test.write", target_type="n"))
                # The entry goes with the commit (migration 0023); until then the chain's
                # lock is held as a node of an older imprint holds it, from its read of
                # the tail to its commit.
                with db.writing(engine) as conn:
                    db.serialized(conn, log_module.CHAIN_LOCK)
                holding.set()
                release.wait(30)
        except BaseException as exc:
            errors.append(exc)

    def second() -> None:
        try:
            log.write(AuditEntry(actor="second", action="test.write", target_type="n"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(30)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    with engine.connect() as conn:
        for _ in range(300):
            if conn.execute(waiting).scalar():
                break
            threading.Event().wait(0.02)
        else:
            pytest.fail("the second writer never waited for the chain's lock")
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    first_entry, second_entry = list(records(log))[-2:]
    assert (first_entry.actor, second_entry.actor) == ("first", "second")
    assert second_entry.prev_hash == first_entry.hash
    assert verify_chain(log).ok


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "event-loop"])
def test_an_append_that_fails_with_the_commit_undoes_the_unit(
    engine: Engine, backend: str, on_loop: bool
) -> None:
    """On PostgreSQL a unit's audit entry goes to the server with its COMMIT (psycopg's
    pipeline, from a thread or on the event loop): when the append fails there, the
    unit's other writes are undone, the error is SQLAlchemy's, and the next unit works."""
    if backend != "postgresql":
        pytest.skip("SQLite appends at once")
    log = SqlAuditLog(engine)
    fill(log, 1)
    nonce = text("INSERT INTO used_nonces (scope, nonce, expires_at) VALUES ('test', :n, now())")

    used: list[tuple[Any, int]] = []  # each unit's driver connection and its backend

    def unit(name: str) -> None:
        with db.unit_of_work(engine):
            with db.writing(engine) as conn:
                conn.execute(nonce, {"n": name})
                backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                used.append((conn.connection.driver_connection, backend_pid))
            log.write(AuditEntry(actor="unit", action="test.write", target_type="n"))

    def run(name: str) -> None:
        if on_loop:
            asyncio.run(db.on_event_loop(engine, unit, name))
        else:
            unit(name)

    tamper(engine, "ALTER FUNCTION imprint_audit_append RENAME TO imprint_audit_gone")
    try:
        with pytest.raises(ProgrammingError, match="imprint_audit_append"):
            run("undone")
    finally:
        tamper(engine, "ALTER FUNCTION imprint_audit_gone RENAME TO imprint_audit_append")
    # The failed transaction's connection was closed at once (the test holds it, so no
    # garbage collection closed it), not pooled inside its transaction; the server ends
    # that backend when it reads the close, a moment later (in CI once, not yet at the
    # first look).
    failed, failed_pid = used[0]
    assert failed.closed
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    deadline = time.monotonic() + 5
    while True:
        with engine.connect() as conn:
            left = conn.execute(alive, {"pid": failed_pid}).scalar()
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == 0
    run("kept")
    with engine.connect() as conn:
        nonces = conn.execute(text("SELECT nonce FROM used_nonces WHERE scope = 'test'"))
        assert [row.nonce for row in nonces] == ["kept"]
    report = verify_chain(log)
    assert (report.ok, report.entries) == (True, 2)


def test_a_value_the_log_refuses_fails_the_write_not_the_commit(engine: Engine) -> None:
    """An entry whose time has no zone is refused by ``write`` itself, also where the
    append waits for the commit (PostgreSQL), and the unit it was in writes nothing."""
    log = SqlAuditLog(engine)
    naive = AuditEntry(actor="a", action="test.naive", target_type="n", at=datetime(2030, 1, 1))
    refused_by_write: list[StatementError] = []

    def unit() -> None:
        with db.unit_of_work(engine):
            log.write(AuditEntry(actor="a", action="test.write", target_type="n"))
            try:
                log.write(naive)
            except StatementError as error:
                refused_by_write.append(error)
                raise

    with pytest.raises(StatementError, match="naive"):
        unit()
    assert refused_by_write
    assert verify_chain(log).entries == 0


def group_entry(name: str) -> AuditEntry:
    """An entry a member of a commit group writes."""
    return AuditEntry(actor="device:x", action="test.group", target_type="n", target_id=name)


def test_the_members_of_a_commit_group_chain_onto_each_other(engine: Engine) -> None:
    """On SQLite a member's entry follows the one an earlier member of its group wrote
    without reading the tail back; a member undone after writing its entries (one, or
    three) leaves nothing the next one chains onto."""
    if engine.dialect.name != "sqlite":
        pytest.skip("commit groups are SQLite's")
    log = SqlAuditLog(engine)
    fill(log, 2)

    def member(name: str, *, fail: bool = False, entries: int = 1) -> Callable[[], str]:
        def work() -> str:
            with db.unit_of_work(engine):
                for n in range(entries):
                    log.write(group_entry(f"{name}-{n}"))
                if fail:
                    raise RuntimeError("undone after its entries")
            return name

        return work

    async def main() -> list[Any]:
        members = [
            member("a"), member("b", entries=2), member("undone", fail=True, entries=3),
            member("c"), member("undone-too", fail=True), member("d"),
        ]  # fmt: skip
        return await asyncio.gather(
            *(db.grouped(engine, work) for work in members), return_exceptions=True
        )

    tails: list[int] = []

    class CountedTail:
        def rows(self, *args: Any) -> Any:
            tails.append(1)
            return TAIL.rows(*args)

    TAIL = log_module._TAIL_SQLITE
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "_TAIL_SQLITE", CountedTail())
        answers = asyncio.run(main())
    assert [a if isinstance(a, str) else "failed" for a in answers] == [
        "a", "b", "failed", "c", "failed", "d"
    ]  # fmt: skip
    report = verify_chain(log)
    assert (report.ok, report.entries, report.broken) == (True, 2 + 5, None)
    written = [r.target_id for r in records(log)][2:]
    assert written == ["a-0", "b-0", "b-1", "c-0", "d-0"]
    # The tail read once for the group, and again after each member that was undone.
    assert len(tails) == 3


def test_a_member_in_the_transaction_after_one_sqlite_ended_reads_the_tail_again(
    engine: Engine,
) -> None:
    """SQLite may end a group's transaction by itself (a full disk, an I/O error) after
    a member's entry, with no savepoint rolled back: the members left run in the next
    transaction and chain onto what is stored, not onto the entry that was lost."""
    if engine.dialect.name != "sqlite":
        pytest.skip("commit groups are SQLite's")
    log = SqlAuditLog(engine)
    fill(log, 1)

    def lost() -> str:
        with db.unit_of_work(engine):
            log.write(group_entry("lost"))
        with db.reading(engine) as conn:  # what SQLite does on such an error
            conn.connection.dbapi_connection.cursor().execute("ROLLBACK")
        raise OSError("disk I/O error")

    def kept() -> str:
        with db.unit_of_work(engine):
            log.write(group_entry("kept"))
        return "kept"

    async def main() -> list[Any]:
        return await asyncio.gather(
            db.grouped(engine, lost), db.grouped(engine, kept), return_exceptions=True
        )

    answers = asyncio.run(main())
    assert isinstance(answers[0], Exception)  # its work is gone with the transaction
    assert answers[1] == "kept"
    report = verify_chain(log)
    assert (report.ok, report.entries, report.broken) == (True, 2, None)
    assert [r.target_id for r in records(log)][1:] == ["kept"]
