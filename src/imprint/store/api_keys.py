"""API keys on SQL: only a SHA-256 of each secret is stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.auth.api_keys import ApiKey
from imprint.clock import Clock
from imprint.errors import Conflict, NotFound
from imprint.store.cache import ReadCache
from imprint.store.db import guarded, own_transaction, reading, writing
from imprint.store.tables import api_keys

__all__ = ["SqlApiKeyStore"]


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        secret_sha256=row["secret_sha256"],
        role=row["role"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
    )


class SqlApiKeyStore:
    """Implements :class:`imprint.auth.api_keys.ApiKeyStore`.

    A key is looked up by every request that carries one: :meth:`find` answers from a
    :class:`~imprint.store.cache.ReadCache`, which every write here forgets at once in
    this process, and in the others a few milliseconds after its commit.
    """

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._cache = ReadCache(engine, "api_keys", clock=clock)

    def add(self, key: ApiKey) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                self._cache.changed(conn)
                conn.execute(
                    api_keys.insert().values(
                        key_id=key.key_id,
                        name=key.name,
                        secret_sha256=key.secret_sha256,
                        role=key.role,
                        created_at=key.created_at,
                        expires_at=key.expires_at,
                    )
                )
        except IntegrityError:
            raise Conflict(f"an API key named {key.name!r} exists already") from None

    def find(self, key_id: str) -> ApiKey | None:
        return self._cache.get(("id", key_id), lambda: self._find(key_id))

    def _find(self, key_id: str) -> ApiKey | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
            )
        return None if row is None else _key(row)

    def find_by_name(self, name: str) -> ApiKey | None:
        with reading(self._engine) as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.name == name)).mappings().first()
        return None if row is None else _key(row)

    def set_secret(self, key_id: str, secret_sha256: str, expires_at: datetime | None) -> None:
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(secret_sha256=secret_sha256, expires_at=expires_at, last_used_at=None)
            )

    def touch(self, key_id: str, at: datetime) -> None:
        # Its own commit, never a request's unit of work: bookkeeping of the credential's
        # use, kept whatever the request then does (authentication runs before its unit).
        with own_transaction(self._engine) as conn:
            self._cache.changed(conn)
            conn.execute(
                update(api_keys).where(api_keys.c.key_id == key_id).values(last_used_at=at)
            )

    def all(self) -> Sequence[ApiKey]:
        with reading(self._engine) as conn:
            return [
                _key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.name)).mappings()
            ]

    def count(self) -> int:
        with reading(self._engine) as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def remove(self, name: str) -> None:
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            if conn.execute(delete(api_keys).where(api_keys.c.name == name)).rowcount == 0:
                raise NotFound(f"no API key named {name!r}")
