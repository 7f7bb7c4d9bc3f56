"""One-time passwords on SQL: only their SHA-256 is stored."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine, RowMapping

from imprint.provisioning.one_time_passwords import OneTimePassword
from imprint.store.db import reading, writing
from imprint.store.tables import one_time_passwords

__all__ = ["SqlOneTimePasswordStore"]


# The password's SHA-256 is unique: one index probe, built once.
_FIND = select(one_time_passwords).where(
    one_time_passwords.c.password_sha256 == bindparam("digest"),
    one_time_passwords.c.device_id == bindparam("device_id"),
)


def _password(row: RowMapping) -> OneTimePassword:
    return OneTimePassword(
        id=row["id"],
        enrollment_id=row["enrollment_id"],
        device_id=row["device_id"],
        password_sha256=row["password_sha256"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        created_by=row["created_by"],
        used_at=row["used_at"],
    )


class SqlOneTimePasswordStore:
    """Implements :class:`imprint.provisioning.one_time_passwords.OneTimePasswordStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, password: OneTimePassword) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                insert(one_time_passwords).values(
                    id=password.id,
                    enrollment_id=password.enrollment_id,
                    device_id=password.device_id,
                    password_sha256=password.password_sha256,
                    created_at=password.created_at,
                    expires_at=password.expires_at,
                    created_by=password.created_by,
                    used_at=password.used_at,
                )
            )

    def find(
        self, digest: str, device_id: str, enrollment_ids: Collection[str] | None = None
    ) -> OneTimePassword | None:
        with reading(self._engine) as conn:
            found = conn.execute(_FIND, {"digest": digest, "device_id": device_id})
            row = found.mappings().first()
        if row is None:
            return None
        if enrollment_ids is not None and row["enrollment_id"] not in enrollment_ids:
            return None
        return _password(row)

    def mark_used(self, password_id: str, at: datetime) -> bool:
        statement = (
            update(one_time_passwords)
            .where(one_time_passwords.c.id == password_id, one_time_passwords.c.used_at.is_(None))
            .values(used_at=at)
        )
        with writing(self._engine) as conn:
            return bool(conn.execute(statement).rowcount)
