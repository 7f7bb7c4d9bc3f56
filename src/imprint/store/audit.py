"""The audit log on SQL: append-only, details as JSON (scrubbed of secrets first)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine

from imprint.audit import AuditEntry, AuditQuery, scrub
from imprint.store.db import writing
from imprint.store.tables import audit_log

__all__ = ["SqlAuditLog"]


class SqlAuditLog:
    """Implements :class:`imprint.audit.AuditLog`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def write(self, entry: AuditEntry) -> None:
        """Append ``entry``: in the caller's unit of work when there is one (the entry
        then commits with the change it records), else in a transaction of its own."""
        with writing(self._engine) as conn:
            conn.execute(
                audit_log.insert().values(
                    at=entry.at,
                    actor=entry.actor[:200],
                    action=entry.action[:64],
                    target_type=entry.target_type[:32],
                    target_id=None if entry.target_id is None else entry.target_id[:200],
                    org_id=entry.org_id,
                    outcome=entry.outcome,
                    details=json.dumps(scrub(entry.details), sort_keys=True),
                )
            )

    def search(self, query: AuditQuery) -> Sequence[AuditEntry]:
        c = audit_log.c
        statement = select(audit_log).order_by(c.id.desc()).limit(query.limit)
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
        if query.before_id is not None:
            statement = statement.where(c.id < query.before_id)
        with self._engine.connect() as conn:
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
