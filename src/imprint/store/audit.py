"""The audit log on SQL: append-only, details as JSON (scrubbed of secrets first), each
entry chained to the one before it (see :mod:`imprint.audit`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, LargeBinary, String, bindparam, func, select
from sqlalchemy.engine import Engine

from imprint.audit import GENESIS, AuditEntry, AuditQuery, AuditRecord, chain_time, scrub
from imprint.clock import Clock, SystemClock
from imprint.store.db import (
    Prepared,
    group_memo,
    last_before_commit,
    lock_key,
    reading,
    serialized,
    writing,
)
from imprint.store.listing import Order, SortKeys
from imprint.store.tables import audit_log

__all__ = ["SqlAuditLog"]

#: The lock that makes appends to the chain one at a time.
CHAIN_LOCK = "audit-chain"

# The statements of an append, built once (every change of state makes one). On SQLite
# the unit's transaction holds the writer lock (``serialized``): the tail's hash and the
# new id (the tail's plus one, what SQLite itself would choose) are read, then the entry,
# hash included, is written in one INSERT. On PostgreSQL the whole append is one call of
# ``imprint_audit_append`` (migration 0023): the chain's lock, the tail read once the lock
# is held, an id from the column's sequence, the hash and the INSERT, so the lock, held
# to the end of the transaction, is not also held across a turn of the client between
# reading the tail and writing the entry. Either way ids follow the chain's order.
_TAIL_SQLITE = Prepared(
    select(audit_log.c.hash, (audit_log.c.id + 1).label("next_id"))
    .order_by(audit_log.c.id.desc())
    .limit(1)
)
_APPENDED = ("at", "actor", "action", "target_type", "target_id", "org_id", "outcome", "details")
_APPEND_POSTGRESQL = Prepared(
    select(
        func.imprint_audit_append(
            bindparam("key", type_=BigInteger),
            bindparam("genesis", type_=String),
            bindparam("before_id", type_=LargeBinary),
            bindparam("after_id", type_=LargeBinary),
            *(bindparam(name, type_=audit_log.c[name].type) for name in _APPENDED),
        )
    )
)
_CHAIN_KEY = lock_key(CHAIN_LOCK)
_APPEND_SQLITE = Prepared(audit_log.insert())
#: The chain's tail after a commit group's last entry, in the group's memo (on SQLite
#: the next member's entry follows it without reading it back).
_TAIL_NOTE = "audit-tail"


#: The audit log's sort keys: by entry (its id follows the chain, so time) by default,
#: newest first; by actor, action, target id or outcome, the entry id breaking ties.
AUDIT_SORT = SortKeys(
    columns={
        "at": audit_log.c.id,
        "actor": audit_log.c.actor,
        "action": audit_log.c.action,
        "target": audit_log.c.target_id,
        "outcome": audit_log.c.outcome,
    },
    tie_breaker=audit_log.c.id,
    default=Order("at", descending=True),
)


def _filtered(statement: Any, query: AuditQuery) -> Any:
    """The WHERE of :meth:`SqlAuditLog.search` and ``count`` (one copy)."""
    c = audit_log.c
    if query.org_ids is not None:
        statement = statement.where(c.org_id.in_(sorted(query.org_ids)))
    for column, value in (
        (c.actor, query.actor),
        (c.action, query.action),
        (c.target_type, query.target_type),
        (c.target_id, query.target_id),
        (c.outcome, query.outcome),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.since is not None:
        statement = statement.where(c.at >= query.since)
    if query.until is not None:
        statement = statement.where(c.at < query.until)
    return statement


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        at=chain_time(row.at),
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        org_id=row.org_id,
        outcome=row.outcome,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class SqlAuditLog:
    """Implements :class:`imprint.audit.AuditLog`."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def write(self, entry: AuditEntry) -> None:
        """Append ``entry``: in the caller's unit of work when there is one (the entry
        then commits with the change it records), else in a transaction of its own.

        The chain lock is held from before the tail is read to the end of the
        transaction, so no two entries follow the same predecessor and, on PostgreSQL,
        ids (drawn from the sequence under the lock) follow the chain's order.
        """
        values: dict[str, Any] = {
            "actor": entry.actor[:200],
            "action": entry.action[:64],
            "target_type": entry.target_type[:32],
            "target_id": None if entry.target_id is None else entry.target_id[:200],
            "org_id": entry.org_id,
            "outcome": entry.outcome,
            "details": json.dumps(scrub(entry.details), sort_keys=True),
        }
        at = entry.at or self._clock.now()
        with writing(self._engine) as conn:
            if conn.dialect.name != "sqlite":
                before_id, after_id = AuditRecord(id=0, at=chain_time(at), **values).around_id()
                last_before_commit(
                    self._engine,
                    conn,
                    _APPEND_POSTGRESQL,
                    {"key": _CHAIN_KEY, "genesis": GENESIS, "before_id": before_id,
                     "after_id": after_id, "at": at, **values},
                )  # fmt: skip
                return
            serialized(conn, CHAIN_LOCK)
            memo = group_memo(conn)
            if memo is not None and _TAIL_NOTE in memo:  # an earlier member's entry
                prev, new_id = memo[_TAIL_NOTE]
            else:
                tail = _TAIL_SQLITE.rows(conn, {})
                prev, new_id = (
                    (tail[0]["hash"] or GENESIS, tail[0]["next_id"]) if tail else (GENESIS, 1)
                )
            digest = AuditRecord(id=new_id, at=chain_time(at), **values).chained_to(prev)
            _APPEND_SQLITE.execute(
                conn, {"id": new_id, "at": at, "prev_hash": prev, "hash": digest, **values}
            )
            if memo is not None:
                memo[_TAIL_NOTE] = (digest, new_id + 1)

    def page(self, after_id: int | None, limit: int) -> Sequence[AuditRecord]:
        c = audit_log.c
        statement = select(audit_log).order_by(c.id).limit(limit)
        if after_id is not None:
            statement = statement.where(c.id > after_id)
        with reading(self._engine) as conn:
            return [_record(row) for row in conn.execute(statement)]

    def count(self, query: AuditQuery) -> int:
        """How many entries match ``query``'s filters (its paging ignored)."""
        statement = _filtered(select(func.count()).select_from(audit_log), query)
        with reading(self._engine) as conn:
            return int(conn.execute(statement).scalar_one())

    def search(self, query: AuditQuery) -> Sequence[AuditEntry]:
        c = audit_log.c
        statement = _filtered(select(audit_log), query)
        if query.order is not None:
            statement = statement.order_by(*AUDIT_SORT.clauses(query.order))
            if query.after is not None:
                nulls_largest = self._engine.dialect.name == "postgresql"
                statement = statement.where(
                    AUDIT_SORT.after(query.order, query.after, nulls_largest=nulls_largest)
                )
        else:
            statement = statement.order_by(c.id if query.oldest_first else c.id.desc())
        statement = statement.limit(query.limit)
        if query.before_id is not None:
            statement = statement.where(c.id < query.before_id)
        if query.offset:
            statement = statement.offset(query.offset)
        with reading(self._engine) as conn:
            return [
                AuditEntry(
                    id=r.id,
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    target_type=r.target_type,
                    target_id=r.target_id,
                    org_id=r.org_id,
                    outcome=r.outcome,
                    details=json.loads(r.details),
                )
                for r in conn.execute(statement)
            ]
