"""The outbox on both databases: a message commits with its transaction or not at all, is
delivered promptly once, retried with backoff, and picked up by another process."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from imprint.outbox import LEASE, PROMPT_GRACE, Outbox, backoff
from imprint.store import db
from imprint.store.outbox import SqlOutboxStore
from imprint.store.tables import outbox as outbox_table

# Storage (claims, leases): every test here runs on PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_outbox(engine: Engine, clock: Clock) -> Outbox:
    return Outbox(SqlOutboxStore(engine), functools.partial(db.after_commit, engine), clock)


def rows(engine: Engine) -> list[Mapping[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(outbox_table)).mappings()]


def test_a_message_commits_with_its_transaction_and_is_delivered_once(engine: Engine) -> None:
    clock, seen = Clock(), list[Mapping[str, Any]]()
    box = make_outbox(engine, clock)
    box.register("thing.changed", seen.append)

    def failing_change() -> None:
        with db.unit_of_work(engine):
            box.add("thing.changed", {"n": 1})
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        failing_change()
    assert rows(engine) == []
    assert seen == []
    with db.unit_of_work(engine):
        box.add("thing.changed", {"n": 2})
        assert seen == [], "delivered before the commit"
    assert seen == [{"n": 2}]
    (row,) = rows(engine)
    assert row["done_at"] is not None
    clock.now += PROMPT_GRACE
    assert box.deliver() == 0
    assert seen == [{"n": 2}]


def test_a_failing_handler_is_retried_with_backoff(engine: Engine) -> None:
    clock, calls = Clock(), []

    def flaky(payload: Mapping[str, Any]) -> None:
        calls.append(payload)
        if len(calls) < 3:
            raise OSError("broker unreachable")

    box = make_outbox(engine, clock)
    box.register("thing.changed", flaky)
    box.add("thing.changed", {"n": 1})  # no unit: delivered (and failing) at once
    (row,) = rows(engine)
    assert (row["attempts"], row["done_at"]) == (1, None)
    assert "broker unreachable" in row["last_error"]
    assert box.deliver() == 0  # not due yet
    clock.now += backoff(1)
    assert box.deliver() == 0  # the second attempt fails too
    (row,) = rows(engine)
    assert row["attempts"] == 2
    clock.now += backoff(1)
    assert box.deliver() == 0, "retried before its backoff ran out"
    clock.now += backoff(2)
    assert box.deliver() == 1
    assert len(calls) == 3
    assert rows(engine)[0]["done_at"] is not None


def test_what_a_dead_process_left_is_delivered_by_the_next_one(engine: Engine) -> None:
    clock, seen = Clock(), list[Mapping[str, Any]]()
    dead = make_outbox(engine, clock)  # it wrote the message, then died: no handler ran
    with db.unit_of_work(engine):
        dead.add("thing.changed", {"n": 7})
    survivor = make_outbox(engine, clock)
    survivor.register("thing.changed", seen.append)
    assert survivor.deliver() == 0  # left to its own process's prompt delivery for now
    clock.now += PROMPT_GRACE
    assert survivor.deliver() == 1
    assert seen == [{"n": 7}]


def test_a_claimed_message_is_not_delivered_twice_meanwhile(engine: Engine) -> None:
    clock = Clock()
    first, second = make_outbox(engine, clock), make_outbox(engine, clock)
    SqlOutboxStore(engine).add("thing.changed", {"n": 1}, clock.now, clock.now)
    store = SqlOutboxStore(engine)
    claimed = store.claim({"thing.changed"}, clock.now, clock.now + LEASE)
    assert [m.payload for m in claimed] == [{"n": 1}]
    assert store.claim({"thing.changed"}, clock.now, clock.now + LEASE) == []
    seen: list[Mapping[str, Any]] = []
    for box in (first, second):
        box.register("thing.changed", seen.append)
    assert first.deliver() + second.deliver() == 0
    # The claimer died: once the lease runs out, another round takes the message.
    clock.now += LEASE + timedelta(seconds=1)
    assert first.deliver() + second.deliver() == 1
    assert seen == [{"n": 1}]


def test_kinds_without_a_handler_are_left_to_a_process_that_has_one(engine: Engine) -> None:
    clock = Clock()
    box = make_outbox(engine, clock)
    box.register("other.kind", lambda _payload: None)
    box.add("thing.changed", {"n": 1})
    clock.now += PROMPT_GRACE
    assert box.deliver() == 0
    assert box.undelivered() == 1
