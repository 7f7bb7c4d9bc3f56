"""Registration keys on SQL: sealed with the KEK, found by SHA-256 of the first half."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.provisioning.registration_keys import KeyState, RegistrationKey, lookup_sha256
from imprint.sealing import SecretBox
from imprint.store.db import Prepared, guarded, reading, serialized, writing
from imprint.store.tables import enrollments, registration_keys

__all__ = ["SqlRegistrationKeyStore"]

#: The key a registration names by the hash of its first half (every registration asks).
_FIND = Prepared(
    select(registration_keys).where(registration_keys.c.lookup_sha256 == bindparam("lookup"))
)


def _context(key_id: str) -> str:
    return f"registration-key:{key_id}"


class SqlRegistrationKeyStore:
    """Implements :class:`imprint.provisioning.registration_keys.RegistrationKeyStore`."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    def _key(self, row: Mapping[Any, Any]) -> RegistrationKey:
        return RegistrationKey(
            id=row["id"],
            enrollment_id=row["enrollment_id"],
            key=self._box.open(row["key_sealed"], _context(row["id"])).decode("ascii"),
            state=KeyState(row["state"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )

    def find(self, lookup_sha256: str) -> RegistrationKey | None:
        with reading(self._engine) as conn:
            rows = _FIND.rows(conn, {"lookup": lookup_sha256})
        return self._key(rows[0]) if rows else None

    def for_enrollment(self, enrollment_id: str) -> Sequence[RegistrationKey]:
        current_first = case((registration_keys.c.state == KeyState.CURRENT.value, 0), else_=1)
        query = (
            select(registration_keys)
            .where(registration_keys.c.enrollment_id == enrollment_id)
            .order_by(current_first, registration_keys.c.created_at.desc())
        )
        with reading(self._engine) as conn:
            return [self._key(row) for row in conn.execute(query).mappings()]

    def _serialize(self, conn: Connection, enrollment_id: str) -> None:
        """Make concurrent installs for one enrollment take turns, writing nothing.

        PostgreSQL: lock the enrollment's row. SQLite: take the database's write lock
        before anything is read, so the check below sees the latest state.
        """
        if conn.dialect.name == "postgresql":
            conn.execute(
                select(enrollments.c.id).where(enrollments.c.id == enrollment_id).with_for_update()
            )
        else:
            serialized(conn, f"registration-keys:{enrollment_id}")

    def install(
        self, key: RegistrationKey, *, replacing: str | None, previous_expires_at: datetime
    ) -> None:
        table = registration_keys
        # What may fail (the check, the insert) comes before the other writes: in a unit
        # of work on SQLite, which has no savepoint here, a failure then leaves nothing.
        try:
            with writing(self._engine) as conn, guarded(conn):
                self._serialize(conn, key.enrollment_id)
                current = set(
                    conn.execute(
                        select(table.c.id).where(
                            table.c.enrollment_id == key.enrollment_id,
                            table.c.state == KeyState.CURRENT.value,
                        )
                    ).scalars()
                )
                if current != ({replacing} if replacing else set()):
                    raise Conflict(
                        "the registration key changed meanwhile; look at it and try again",
                        code="registration_key_changed",
                    )
                conn.execute(
                    insert(table).values(
                        id=key.id,
                        enrollment_id=key.enrollment_id,
                        lookup_sha256=lookup_sha256(key.first_half),
                        key_sealed=self._box.seal(key.key.encode("ascii"), _context(key.id)),
                        state=key.state.value,
                        expires_at=key.expires_at,
                        created_at=key.created_at,
                    )
                )
                conn.execute(
                    delete(table).where(
                        table.c.enrollment_id == key.enrollment_id,
                        table.c.state == KeyState.PREVIOUS.value,
                        table.c.id != key.id,
                    )
                )
                if replacing is not None:
                    conn.execute(
                        update(table)
                        .where(table.c.id == replacing)
                        .values(state=KeyState.PREVIOUS.value, expires_at=previous_expires_at)
                    )
        except IntegrityError:
            raise Conflict(
                "this key's first half is in use already; choose another key",
                code="registration_key_taken",
            ) from None

    def set_expiry(self, key_id: str, expires_at: datetime) -> None:
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(registration_keys)
                .where(
                    registration_keys.c.id == key_id,
                    registration_keys.c.state == KeyState.PREVIOUS.value,
                )
                .values(expires_at=expires_at)
            ).rowcount
        if changed == 0:
            raise NotFound(f"no previous registration key {key_id!r}")
