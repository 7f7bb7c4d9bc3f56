"""Trusted client CAs on SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine, RowMapping

from imprint.clock import Clock
from imprint.errors import NotFound
from imprint.provisioning.client_cas import ClientCA
from imprint.store.cache import ReadCache
from imprint.store.db import reading, writing
from imprint.store.tables import client_cas

__all__ = ["SqlClientCAStore"]


def _ca(row: RowMapping) -> ClientCA:
    return ClientCA(
        id=row["id"],
        enrollment_id=row["enrollment_id"],
        fingerprint_sha256=row["fingerprint_sha256"],
        subject=row["subject"],
        pem=row["pem"],
        created_at=row["created_at"],
    )


class SqlClientCAStore:
    """Implements :class:`imprint.provisioning.client_cas.ClientCAStore`."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._cache = ReadCache(engine, "client_cas", clock=clock)

    def add(self, cas: Sequence[ClientCA]) -> int:
        added = 0
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            for ca in cas:
                exists = conn.execute(
                    select(client_cas.c.id).where(
                        client_cas.c.enrollment_id == ca.enrollment_id,
                        client_cas.c.fingerprint_sha256 == ca.fingerprint_sha256,
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        insert(client_cas).values(
                            id=ca.id or str(uuid.uuid4()),
                            enrollment_id=ca.enrollment_id,
                            fingerprint_sha256=ca.fingerprint_sha256,
                            subject=ca.subject,
                            pem=ca.pem,
                            created_at=ca.created_at,
                        )
                    )
                    added += 1
        return added

    def for_enrollment(self, enrollment_id: str) -> Sequence[ClientCA]:
        return self._cache.get(("enrollment", enrollment_id), lambda: self._for(enrollment_id))

    def _for(self, enrollment_id: str) -> Sequence[ClientCA]:
        query = (
            select(client_cas)
            .where(client_cas.c.enrollment_id == enrollment_id)
            .order_by(client_cas.c.created_at, client_cas.c.id)
        )
        with reading(self._engine) as conn:
            return tuple(_ca(row) for row in conn.execute(query).mappings())

    def all(self) -> Sequence[ClientCA]:
        return self._cache.get("all", self._all)

    def _all(self) -> Sequence[ClientCA]:
        with reading(self._engine) as conn:
            return tuple(_ca(row) for row in conn.execute(select(client_cas)).mappings())

    def remove(self, enrollment_id: str, fingerprint: str) -> None:
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            gone = conn.execute(
                delete(client_cas).where(
                    client_cas.c.enrollment_id == enrollment_id,
                    client_cas.c.fingerprint_sha256 == fingerprint.lower(),
                )
            ).rowcount
        if gone == 0:
            raise NotFound(f"enrollment {enrollment_id!r} does not trust CA {fingerprint}")
