"""The outbox on SQL (see :mod:`imprint.outbox`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine

from imprint.outbox import Message
from imprint.store.db import reading, writing
from imprint.store.tables import outbox

__all__ = ["SqlOutboxStore"]


def _message(row: Sequence[Any]) -> Message:
    message_id, kind, payload, attempts = row
    return Message(int(message_id), str(kind), json.loads(payload), int(attempts))


class SqlOutboxStore:
    """Implements :class:`imprint.outbox.OutboxStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, kind: str, payload: Mapping[str, Any], at: datetime, due: datetime) -> int:
        with writing(self._engine) as conn:
            return int(
                conn.execute(
                    outbox.insert()
                    .values(
                        kind=kind,
                        payload=json.dumps(dict(payload), sort_keys=True),
                        created_at=at,
                        due_at=due,
                        attempts=0,
                    )
                    .returning(outbox.c.id)
                ).scalar_one()
            )

    def claim(self, kinds: Collection[str], now: datetime, until: datetime) -> Sequence[Message]:
        c = outbox.c
        statement = (
            update(outbox)
            .where(c.done_at.is_(None), c.due_at <= now, c.kind.in_(sorted(kinds)))
            .values(due_at=until, attempts=c.attempts + 1)
            .returning(c.id, c.kind, c.payload, c.attempts)
        )
        with writing(self._engine) as conn:
            rows = conn.execute(statement).all()
        return sorted((_message(r) for r in rows), key=lambda m: m.id)

    def undelivered_of(self, ids: Collection[int]) -> Sequence[Message]:
        c = outbox.c
        statement = (
            select(c.id, c.kind, c.payload, c.attempts + 1)
            .where(c.id.in_(sorted(ids)), c.done_at.is_(None))
            .order_by(c.id)
        )
        with reading(self._engine) as conn:
            return [_message(r) for r in conn.execute(statement).all()]

    def done(self, message_id: int, at: datetime) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(outbox).where(outbox.c.id == message_id).values(done_at=at, last_error=None)
            )

    def retry(self, message_id: int, attempts: int, due: datetime, error: str) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id)
                .values(due_at=due, attempts=attempts, last_error=error[:500])
            )

    def purge(self, done_before: datetime) -> int:
        with writing(self._engine) as conn:
            result = conn.execute(delete(outbox).where(outbox.c.done_at < done_before))
        return int(result.rowcount or 0)

    def undelivered(self) -> int:
        with reading(self._engine) as conn:
            count = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.done_at.is_(None))
            ).scalar_one()
        return int(count)
