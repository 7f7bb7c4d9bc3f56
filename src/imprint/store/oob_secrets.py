"""Out-of-band secrets on SQL, sealed with the KEK (the server needs them back for HMACs).

Each secret is sealed for ``oob-secret:<enrollment>:<device>``, so a sealed value
copied to another row does not open.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.provisioning.oob_secrets import OobSecret, OobSecretSummary
from imprint.sealing import SecretBox
from imprint.store.db import Prepared, guarded, reading, writing
from imprint.store.listing import Order, SortKeys, contains
from imprint.store.tables import oob_secrets

__all__ = ["OOB_SECRET_SORT", "SqlOobSecretStore", "sealing_context"]

_BATCH = 1000
_IN_CHUNK = 500

#: The orders of an enrollment's list of secrets (the API's is by device id).
OOB_SECRET_SORT = SortKeys(
    {
        "device_id": oob_secrets.c.device_id,
        "valid_until": oob_secrets.c.valid_until,
        "created": oob_secrets.c.created_at,
        "used": oob_secrets.c.used_at,
    },
    tie_breaker=oob_secrets.c.device_id,
    default=Order("device_id"),
)


# The statements of a registration, built once. A device's secrets are read by its id
# alone (the ``device_id`` index): which of its enrollments admit it is decided in Python
# from the cached enrollments, instead of a per-device enrollment search and an ``IN``.
_OF_DEVICE = Prepared(
    select(oob_secrets)
    .where(oob_secrets.c.device_id == bindparam("device_id"))
    .order_by(oob_secrets.c.enrollment_id)
)
_ONE = Prepared(
    select(oob_secrets).where(
        oob_secrets.c.enrollment_id == bindparam("enrollment_id"),
        oob_secrets.c.device_id == bindparam("device_id"),
    )
)
_SPEND = Prepared(
    update(oob_secrets)
    .where(
        oob_secrets.c.enrollment_id == bindparam("_enrollment"),
        oob_secrets.c.device_id == bindparam("_device"),
        oob_secrets.c.used_at.is_(None),
    )
    .values(used_at=bindparam("_at"))
)


def _filtered(query: Any, enrollment_id: str, text: str | None) -> Any:
    """The WHERE of :meth:`SqlOobSecretStore.search` and ``count`` (one copy)."""
    query = query.where(oob_secrets.c.enrollment_id == enrollment_id)
    if text:
        query = query.where(oob_secrets.c.device_id.ilike(contains(text), escape="\\"))
    return query


def sealing_context(enrollment_id: str, device_id: str) -> str:
    return f"oob-secret:{enrollment_id}:{device_id}"


class SqlOobSecretStore:
    """Implements :class:`imprint.provisioning.oob_secrets.OobSecretStore`."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    def _open(self, row: RowMapping | Mapping[str, Any]) -> OobSecret:
        context = sealing_context(row["enrollment_id"], row["device_id"])
        return OobSecret(
            enrollment_id=row["enrollment_id"],
            device_id=row["device_id"],
            secret=self._box.open(row["secret_sealed"], context).decode("utf-8"),
            valid_until=row["valid_until"],
            created_at=row["created_at"],
            used_at=row["used_at"],
        )

    def _row(self, secret: OobSecret) -> dict[str, Any]:
        context = sealing_context(secret.enrollment_id, secret.device_id)
        return {
            "enrollment_id": secret.enrollment_id,
            "device_id": secret.device_id,
            "secret_sealed": self._box.seal(secret.secret.encode("utf-8"), context),
            "valid_until": secret.valid_until,
            "used_at": secret.used_at,
            "created_at": secret.created_at,
        }

    def get(self, enrollment_id: str, device_id: str) -> OobSecret | None:
        with reading(self._engine) as conn:
            rows = _ONE.rows(conn, {"enrollment_id": enrollment_id, "device_id": device_id})
        return self._open(rows[0]) if rows else None

    def for_device(
        self, device_id: str, enrollment_ids: Collection[str] | None = None
    ) -> list[OobSecret]:
        with reading(self._engine) as conn:
            rows = _OF_DEVICE.rows(conn, {"device_id": device_id})
        return [
            self._open(row)
            for row in rows
            if enrollment_ids is None or row["enrollment_id"] in enrollment_ids
        ]

    def existing(self, enrollment_id: str, device_ids: Sequence[str]) -> dict[str, OobSecret]:
        found: dict[str, OobSecret] = {}
        with reading(self._engine) as conn:
            for start in range(0, len(device_ids), _IN_CHUNK):
                chunk = list(device_ids[start : start + _IN_CHUNK])
                query = select(oob_secrets).where(
                    oob_secrets.c.enrollment_id == enrollment_id,
                    oob_secrets.c.device_id.in_(chunk),
                )
                for row in conn.execute(query).mappings():
                    found[row["device_id"]] = self._open(row)
        return found

    def write(
        self,
        inserts: Sequence[OobSecret],
        updates: Sequence[OobSecret],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        change = (
            update(oob_secrets)
            .where(
                and_(
                    oob_secrets.c.enrollment_id == bindparam("key_enrollment"),
                    oob_secrets.c.device_id == bindparam("key_device"),
                )
            )
            .values(
                secret_sealed=bindparam("new_sealed"),
                valid_until=bindparam("new_valid_until"),
                used_at=bindparam("new_used_at"),
                created_at=bindparam("new_created_at"),
            )
        )
        # One transaction, in statements of _BATCH rows (to bound the memory of a large
        # import, not to commit part of it): a unit of work's when there is one.
        try:
            with writing(self._engine) as conn, guarded(conn):
                for start in range(0, len(inserts), _BATCH):
                    batch = inserts[start : start + _BATCH]
                    conn.execute(insert(oob_secrets), [self._row(s) for s in batch])
                    if progress is not None:
                        progress(len(batch))
                for start in range(0, len(updates), _BATCH):
                    batch = updates[start : start + _BATCH]
                    rows = []
                    for secret in batch:
                        row = self._row(secret)
                        rows.append(
                            {
                                "key_enrollment": row["enrollment_id"],
                                "key_device": row["device_id"],
                                "new_sealed": row["secret_sealed"],
                                "new_valid_until": row["valid_until"],
                                "new_used_at": row["used_at"],
                                "new_created_at": row["created_at"],
                            }
                        )
                    conn.execute(change, rows)
                    if progress is not None:
                        progress(len(batch))
        except IntegrityError:
            raise Conflict(
                "another registration wrote some of these devices at the same time; "
                "nothing was written, try again",
                code="oob_secret_conflict",
            ) from None

    def mark_used(self, enrollment_id: str, device_id: str, at: datetime) -> bool:
        values = {"_enrollment": enrollment_id, "_device": device_id, "_at": at}
        with writing(self._engine) as conn:
            return _SPEND.execute(conn, values) > 0

    def search(
        self,
        enrollment_id: str,
        *,
        limit: int = 100,
        after: str | None = None,
        text: str | None = None,
        order: Order | None = None,
        offset: int = 0,
    ) -> list[OobSecretSummary]:
        """An enrollment's secrets (never the secret), by device id (``after``: the last
        of the previous page) or in ``order`` (:data:`OOB_SECRET_SORT`) from ``offset``;
        ``text`` matches the device id."""
        columns = [c for c in oob_secrets.c if c.name != "secret_sealed"]
        query = (
            _filtered(select(*columns), enrollment_id, text)
            .order_by(*OOB_SECRET_SORT.clauses(order))
            .limit(limit)
        )
        if after is not None:
            query = query.where(oob_secrets.c.device_id > after)
        if offset:
            query = query.offset(offset)
        with reading(self._engine) as conn:
            return [
                OobSecretSummary(
                    enrollment_id=row["enrollment_id"],
                    device_id=row["device_id"],
                    valid_until=row["valid_until"],
                    created_at=row["created_at"],
                    used_at=row["used_at"],
                )
                for row in conn.execute(query).mappings()
            ]

    def remove(self, enrollment_id: str, device_id: str) -> None:
        statement = delete(oob_secrets).where(
            oob_secrets.c.enrollment_id == enrollment_id, oob_secrets.c.device_id == device_id
        )
        with writing(self._engine) as conn:
            if conn.execute(statement).rowcount == 0:
                raise NotFound(f"no secret for device {device_id!r} in {enrollment_id!r}")

    def count(self, enrollment_id: str | None = None, *, text: str | None = None) -> int:
        """How many secrets are registered (in ``enrollment_id``, matching ``text``)."""
        query = select(func.count()).select_from(oob_secrets)
        if enrollment_id is not None:
            query = _filtered(query, enrollment_id, text)
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())
