"""Commit groups (SQLite, on the event loop): the use cases of the requests ready together
run one after another in one transaction, committed once for all of them, and each
request gets its answer only after that commit (``imprint.store.db.grouped``).

What a user of the device plane relies on, checked on a real database file:
- one member's failure undoes its own writes only, and its refusal's own writes stay;
- a member sees what the members before it wrote;
- no member is answered before the commit, and when the commit fails, none succeeds
  and nothing of theirs is stored or announced (after-commit callbacks);
- a transaction SQLite ended by itself midway, or a member's work that could not be
  rolled back, fails the members that ran in it, and the rest run again in a group of
  their own;
- a read cache never hands another thread what a member read of an earlier member's
  uncommitted write.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from imprint.store import db
from imprint.store.db import (
    after_commit,
    create_engine,
    grouped,
    own_transaction,
    reading,
    unit_of_work,
    writing,
)

INSERT = text("INSERT INTO things (name) VALUES (:name)")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = create_engine(f"sqlite:///{tmp_path}/group.db")
    with writing(made) as conn:
        conn.execute(text("CREATE TABLE things (name TEXT PRIMARY KEY)"))
    yield made
    made.dispose()


def stored(engine: Engine) -> set[str]:
    with reading(engine) as conn:
        return {row[0] for row in conn.execute(text("SELECT name FROM things"))}


def commits(engine: Engine) -> list[int]:
    counted: list[int] = []
    event.listen(engine, "commit", lambda _conn: counted.append(1))
    return counted


def add(engine: Engine, name: str) -> Callable[[], str]:
    """A member whose unit of work stores ``name``."""

    def work() -> str:
        with unit_of_work(engine), writing(engine) as conn:
            conn.execute(INSERT, {"name": name})
        return name

    return work


def together(*calls: Any) -> list[Any]:
    """Run the members on one event loop, all ready at once; their answers or errors."""

    async def main() -> list[Any]:
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(main())


class Observed:
    """A :class:`imprint.store.db.GroupObserver` that keeps what it is told."""

    def __init__(self) -> None:
        self.groups: list[tuple[int, float | None, float]] = []

    def group_committed(self, members: int, lock_wait: float | None, held: float) -> None:
        self.groups.append((members, lock_wait, held))


def test_members_ready_together_commit_once(engine: Engine) -> None:
    counted = commits(engine)
    observed = Observed()
    db.observe_groups(engine, observed)
    names = [f"device-{n}" for n in range(10)]
    answers = together(*(grouped(engine, add(engine, name)) for name in names))
    assert answers == names
    assert stored(engine) == set(names)
    assert len(counted) == 1
    # The observer hears of the one group: its ten members, the writer lock found free.
    ((members, lock_wait, held),) = observed.groups
    assert (members, lock_wait) == (10, None)
    assert 0 < held < 5


def test_a_group_that_writes_nothing_is_not_observed(engine: Engine) -> None:
    observed = Observed()
    db.observe_groups(engine, observed)
    assert together(grouped(engine, lambda: count(engine))) == [0]
    assert observed.groups == []


def test_a_failing_member_undoes_only_its_own_work(engine: Engine) -> None:
    def refused() -> None:
        with unit_of_work(engine):
            with writing(engine) as conn:
                conn.execute(INSERT, {"name": "half-done"})
            raise PermissionError("refused after a write")

    def refused_with_journal() -> None:
        try:
            refused()
        finally:  # what a refusal writes after its unit rolled back is kept
            with writing(engine) as conn:
                conn.execute(INSERT, {"name": "journal"})

    def clashing() -> None:  # a constraint error inside its unit
        with unit_of_work(engine), writing(engine) as conn:
            conn.execute(INSERT, {"name": "mine"})
            conn.execute(INSERT, {"name": "first"})

    answers = together(
        grouped(engine, add(engine, "first")),
        grouped(engine, refused_with_journal),
        grouped(engine, clashing),
        grouped(engine, add(engine, "last")),
    )
    assert answers[0] == "first"
    assert answers[3] == "last"
    assert isinstance(answers[1], PermissionError)
    assert "UNIQUE" in str(answers[2])
    assert stored(engine) == {"first", "journal", "last"}


def test_a_transaction_of_its_own_outlives_the_members_unit(engine: Engine) -> None:
    def spends_then_fails() -> None:
        with own_transaction(engine) as conn:  # a nonce spent whatever happens next
            conn.execute(INSERT, {"name": "nonce"})
        with unit_of_work(engine):
            with writing(engine) as conn:
                conn.execute(INSERT, {"name": "device"})
            raise ValueError("refused")

    answers = together(grouped(engine, spends_then_fails), grouped(engine, add(engine, "x")))
    assert isinstance(answers[0], ValueError)
    assert stored(engine) == {"nonce", "x"}


def lock_is_free(lock_file: Path) -> bool:
    """Whether no connection holds the writer lock of the database (the flock(2) every
    writer takes), checked without waiting."""
    probe = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(probe)
    return True


def count(engine: Engine) -> int:
    with reading(engine) as conn:
        return int(conn.execute(text("SELECT count(*) FROM things")).scalar_one())


def test_a_member_that_has_written_reads_what_the_members_before_it_wrote(
    engine: Engine,
) -> None:
    def writes_then_counts() -> int:
        with unit_of_work(engine):
            with writing(engine) as conn:
                conn.execute(INSERT, {"name": "c"})
            return count(engine)

    answers = together(
        grouped(engine, add(engine, "a")),
        grouped(engine, add(engine, "b")),
        grouped(engine, writes_then_counts),
    )
    assert answers == ["a", "b", 3]


def test_before_its_first_write_a_member_reads_what_is_committed_without_the_writer_lock(
    engine: Engine, tmp_path: Path
) -> None:
    # The read phase: every member runs up to its first write before any member writes,
    # and no writer lock is held meanwhile, so another process can write.
    other = create_engine(f"sqlite:///{tmp_path}/group.db")
    seen: list[int] = []

    def reads_then_writes(name: str) -> Callable[[], str]:
        def work() -> str:
            seen.append(count(engine))
            if lock_is_free(tmp_path / "group.db.writer-lock"):  # else it would wait in vain
                with writing(other) as conn:
                    conn.execute(INSERT, {"name": f"theirs-{name}"})
            return add(engine, name)()

        return work

    try:
        answers = together(*(grouped(engine, reads_then_writes(n)) for n in ("a", "b", "c")))
    finally:
        other.dispose()
    assert answers == ["a", "b", "c"]
    assert seen == [0, 1, 2]  # the other process's commits, none of the group's writes
    assert stored(engine) == {"a", "b", "c", "theirs-a", "theirs-b", "theirs-c"}


def test_a_member_that_reads_before_it_writes_outlasts_another_processs_commit(
    engine: Engine, tmp_path: Path
) -> None:
    # Another process (a second worker, the CLI) on the same file: an engine of its own,
    # with its own writer locks.
    other = create_engine(f"sqlite:///{tmp_path}/group.db")

    def reads_then_writes() -> str:
        with reading(engine) as conn:
            assert conn.execute(text("SELECT count(*) FROM things")).scalar_one() == 0
        with writing(other) as conn:  # commits between this member's read and its write
            conn.execute(INSERT, {"name": "theirs"})
        with unit_of_work(engine), writing(engine) as conn:
            conn.execute(INSERT, {"name": "mine"})
        return "mine"

    try:
        answers = together(grouped(engine, reads_then_writes), grouped(engine, add(engine, "b")))
    finally:
        other.dispose()
    assert answers == ["mine", "b"]
    assert stored(engine) == {"theirs", "mine", "b"}


def test_no_member_is_answered_before_the_commit(engine: Engine) -> None:
    seen: list[set[str]] = []

    async def main() -> None:
        first = asyncio.ensure_future(grouped(engine, add(engine, "a")))
        second = asyncio.ensure_future(grouped(engine, add(engine, "b")))
        await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
        # Whoever is answered first: both rows are durable, seen from another connection.
        seen.append(await asyncio.to_thread(stored, engine))
        await asyncio.gather(first, second)

    asyncio.run(main())
    assert seen == [{"a", "b"}]


def test_a_failed_commit_fails_every_member_and_keeps_nothing(engine: Engine) -> None:
    announced: list[str] = []

    def announcing(name: str) -> Callable[[], str]:
        def work() -> str:
            with unit_of_work(engine):
                with writing(engine) as conn:
                    conn.execute(INSERT, {"name": name})
                after_commit(engine, lambda: announced.append(name))
            return name

        return work

    def refuse_commit(_conn: Any) -> None:
        raise OSError("disk I/O error")

    event.listen(engine, "commit", refuse_commit)
    try:
        answers = together(grouped(engine, announcing("a")), grouped(engine, announcing("b")))
    finally:
        event.remove(engine, "commit", refuse_commit)
    assert all(isinstance(answer, OSError) for answer in answers), answers
    assert stored(engine) == set()
    assert announced == []
    # The next group starts clean.
    assert together(grouped(engine, announcing("c"))) == ["c"]
    assert stored(engine) == {"c"}
    assert announced == ["c"]


def test_a_transaction_sqlite_ended_midway_fails_those_in_it_and_retries_the_rest(
    engine: Engine,
) -> None:
    def rolled_back_by_the_database() -> None:
        # As SQLite does by itself on a full disk or an I/O error: the whole transaction
        # is gone, the members' savepoints with it.
        with writing(engine) as conn:
            conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]

    answers = together(
        grouped(engine, add(engine, "lost")),
        grouped(engine, rolled_back_by_the_database),
        grouped(engine, add(engine, "after")),
    )
    assert isinstance(answers[0], db.SQLAlchemyError), answers
    assert isinstance(answers[1], Exception)
    assert answers[2] == "after"
    assert stored(engine) == {"after"}


def test_a_member_whose_work_cannot_be_undone_loses_the_group(engine: Engine) -> None:
    def refuse_rollbacks(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("ROLLBACK TO SAVEPOINT"):
            raise OSError("the rollback failed")

    def refused() -> None:
        with unit_of_work(engine), writing(engine) as conn:
            conn.execute(INSERT, {"name": "half-done"})
            raise PermissionError("refused after a write")

    event.listen(engine, "before_cursor_execute", refuse_rollbacks)
    try:
        answers = together(
            grouped(engine, add(engine, "before")),
            grouped(engine, refused),
            grouped(engine, add(engine, "after")),
        )
    finally:
        event.remove(engine, "before_cursor_execute", refuse_rollbacks)
    # Its half-done write is still in the group's transaction: nothing of it commits.
    assert isinstance(answers[0], db.SQLAlchemyError), answers
    assert isinstance(answers[1], Exception)
    assert answers[2] == "after"
    assert stored(engine) == {"after"}


def test_a_group_takes_at_most_its_limit(engine: Engine) -> None:
    counted = commits(engine)
    names = [f"d{n}" for n in range(db.GROUP_LIMIT + 5)]
    assert together(*(grouped(engine, add(engine, name)) for name in names)) == names
    assert len(counted) == 2
    assert stored(engine) == set(names)


def test_a_member_whose_request_is_gone_is_not_run(engine: Engine) -> None:
    async def main() -> None:
        kept = asyncio.ensure_future(grouped(engine, add(engine, "kept")))
        gone = asyncio.ensure_future(grouped(engine, add(engine, "gone")))
        await asyncio.sleep(0)  # both waiting for their group
        gone.cancel()
        assert await kept == "kept"

    asyncio.run(main())
    assert stored(engine) == {"kept"}


def test_a_read_cache_never_hands_out_a_members_uncommitted_read(
    migrated_database_url: str,
) -> None:
    from imprint.store.cache import ReadCache

    engine = create_engine(migrated_database_url)  # with the table its writes count in
    with writing(engine) as conn:
        conn.execute(text("CREATE TABLE things (name TEXT PRIMARY KEY)"))
    cache = ReadCache(engine, "things")

    def load() -> bool:
        with reading(engine) as conn:
            return conn.execute(text("SELECT 1 FROM things WHERE name = 'x'")).first() is not None

    def writes() -> None:
        with writing(engine) as conn:
            cache.changed(conn)
            conn.execute(INSERT, {"name": "x"})

    elsewhere: list[bool] = []

    def reads_then_asks_another_thread() -> bool:
        with writing(engine) as conn:  # from here on, it reads through the group
            conn.execute(INSERT, {"name": "y"})
        found = cache.get("x", load)  # the earlier member's row, not committed yet
        thread = threading.Thread(target=lambda: elsewhere.append(cache.get("x", load)))
        thread.start()
        thread.join()
        return found

    def refuse_commit(_conn: Any) -> None:
        raise OSError("disk I/O error")

    event.listen(engine, "commit", refuse_commit)
    try:
        answers = together(grouped(engine, writes), grouped(engine, reads_then_asks_another_thread))
    finally:
        event.remove(engine, "commit", refuse_commit)
        engine.dispose()
    assert all(isinstance(answer, OSError) for answer in answers), answers
    # The other thread read the database (nothing committed), not the member's answer.
    assert elsewhere == [False]
    assert stored(engine) == set()


@pytest.mark.parametrize("holder", ["another process", "a thread of this process"])
def test_a_group_waits_for_a_held_writer_lock_without_blocking_the_loop(
    engine: Engine, tmp_path: Path, holder: str
) -> None:
    # Another process (a second worker, the CLI) is an engine of its own on the file; a
    # thread of this process (the admin API) writes through the same engine.
    other = (
        create_engine(f"sqlite:///{tmp_path}/group.db") if holder == "another process" else engine
    )
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with writing(other) as conn:
            conn.execute(INSERT, {"name": "theirs"})
            held.set()
            release.wait(3)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(3)

    observed = Observed()
    db.observe_groups(engine, observed)

    async def main() -> tuple[str, int]:
        member = asyncio.ensure_future(grouped(engine, add(engine, "mine")))
        ticks = 0
        while ticks < 20:  # the loop goes on serving while the group waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert not member.done()
        release.set()
        waits = db.committer(engine, asyncio.get_running_loop()).lock_waits
        return await member, waits

    try:
        answer, waits = asyncio.run(main())
    finally:
        release.set()
        thread.join()
        if other is not engine:
            other.dispose()
    assert (answer, waits) == ("mine", 1)
    assert stored(engine) == {"theirs", "mine"}
    # Observed: the wait (at least the 0.1 s the loop ticked before the release), and
    # the time held counted from when the wait ended.
    ((members, lock_wait, held),) = observed.groups
    assert members == 1
    assert lock_wait is not None
    assert 0.09 <= lock_wait < 3
    assert held < lock_wait


def test_a_group_reads_and_writes_on_one_connection(engine: Engine) -> None:
    # Each member reads, then writes: the read phase's connection is the write phase's,
    # not a pooled connection a read.
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_args: checkouts.append(1))

    def reads_then_writes(name: str) -> Callable[[], str]:
        def work() -> str:
            count(engine)
            count(engine)
            return add(engine, name)()

        return work

    names = [f"d{n}" for n in range(5)]
    assert together(*(grouped(engine, reads_then_writes(name)) for name in names)) == names
    assert len(checkouts) == 1
    assert stored(engine) == set(names)


def test_a_member_holding_an_in_process_lock_writes_without_stopping(engine: Engine) -> None:
    # A member that writes while it holds an imprint.locks.Lock (a signing key made on
    # first use) cannot stop for the write phase: the next member, on the same thread,
    # would wait for the lock for good. The write phase begins at once instead.
    from imprint.locks import Lock

    lock = Lock()
    found_free: list[bool] = []
    observed = Observed()
    db.observe_groups(engine, observed)

    def under_the_lock(name: str) -> Callable[[], str]:
        def work() -> str:
            found_free.append(not lock.locked())
            if not found_free[-1]:
                return "would have hung"
            with lock:
                written = add(engine, name)()
                time.sleep(0.05)  # holding the writer locks, in the early write phase
                return written

        return work

    answers = together(
        grouped(engine, add(engine, "first")),
        grouped(engine, under_the_lock("a")),
        grouped(engine, under_the_lock("b")),
        grouped(engine, add(engine, "last")),
    )
    assert answers == ["first", "a", "b", "last"]
    assert found_free == [True, True]
    assert stored(engine) == {"first", "a", "b", "last"}
    # One group, observed from when its early write phase took the writer locks: the
    # two members' sleeps under them are in the time it held them.
    ((members, lock_wait, held),) = observed.groups
    assert (members, lock_wait) == (4, None)
    assert 0.1 <= held < 5


def _temporary_files_open() -> list[str]:
    """The files this process holds open that SQLite made as temporary ones."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (listdir's own descriptor)
            continue
        if "etilqs_" in target:  # SQLite's prefix for its temporary files
            held.append(target)
    return held


def test_a_members_savepoint_journal_is_kept_in_memory(engine: Engine) -> None:
    """Each member is a savepoint; the original of every page it changes is kept for its
    rollback. SQLite moved that journal to a temporary file once it passed 64 KiB, at
    two write(2) a page (bench/README.md, step 31); now no such file is opened, and a
    rollback to the savepoint still undoes every page. (A migration keeps SQLite's
    default: tests/integration/test_store.py.)"""
    with writing(engine) as conn:  # about 70 pages, more than 64 KiB to journal
        conn.execute(text("CREATE TABLE pages (id INTEGER PRIMARY KEY, filler TEXT)"))
        conn.execute(
            text("INSERT INTO pages (filler) VALUES (:filler)"),
            [{"filler": "x" * 500} for _ in range(500)],
        )
    seen: list[str] = []

    def changes_every_page(filler: str, *, refuse: bool = False) -> Callable[[], str]:
        def work() -> str:
            with unit_of_work(engine), writing(engine) as conn:
                conn.execute(text("UPDATE pages SET filler = :filler"), {"filler": filler})
                seen.extend(_temporary_files_open())
                if refuse:
                    raise PermissionError("refused after its writes")
            return filler

        return work

    answers = together(
        grouped(engine, changes_every_page("y" * 500)),
        grouped(engine, changes_every_page("z" * 500, refuse=True)),
    )
    assert answers[0] == "y" * 500
    assert isinstance(answers[1], PermissionError)
    with reading(engine) as conn:
        fillers = conn.execute(text("SELECT DISTINCT filler FROM pages")).scalars().all()
    assert fillers == ["y" * 500]  # the refused member's pages all came back
    assert seen == []
