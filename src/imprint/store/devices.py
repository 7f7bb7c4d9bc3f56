"""Devices, provisioning step records and used nonces on SQL."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.provisioning.devices import (
    Device,
    DeviceStatus,
    ProvisioningStep,
    StepRecord,
)
from imprint.store.db import (
    Prepared,
    guarded,
    lock_key,
    own_transaction,
    reading,
    serialized,
    writing,
)
from imprint.store.tables import devices, provisioning_records, used_nonces

__all__ = ["SqlDeviceStore", "SqlNonceStore", "SqlStepRecorder"]

# The statements of the provisioning path, built once: building a Core statement and
# its cache key costs more than running it on SQLite.
_FIND = Prepared(
    select(devices).where(
        devices.c.owner == bindparam("owner"), devices.c.device_id == bindparam("device_id")
    )
)
_GET = Prepared(select(devices).where(devices.c.id == bindparam("ref")))
#: The device, and another holder of the key (the ``holder`` column says which is which).
_KEY_HOLDING = (
    DeviceStatus.PROVISIONED.value,
    DeviceStatus.PENDING.value,
    DeviceStatus.APPROVED.value,
)
_FIND_WITH_HOLDER = Prepared(
    union_all(
        select(devices, literal_column("0").label("holder")).where(
            devices.c.owner == bindparam("owner"), devices.c.device_id == bindparam("device_id")
        ),
        select(
            select(devices, literal_column("1").label("holder"))
            .where(
                devices.c.public_key_sha256 == bindparam("key"),
                # Each status a value of its own: an IN that needs no expansion (Prepared).
                devices.c.status.in_([literal(status) for status in _KEY_HOLDING]),
                or_(
                    devices.c.owner != bindparam("owner"),
                    devices.c.device_id != bindparam("device_id"),
                ),
            )
            .limit(1)
            .subquery()
        ),
    )
)
_UPDATE = update(devices).where(devices.c.id == bindparam("_ref"))  # SET from the values
_INSERT = insert(devices)
#: The columns :meth:`SqlDeviceStore.save` writes (an upsert changes no other column).
_SAVED = (
    "id", "owner", "device_id", "enrollment_id", "mechanism", "status", "created_at",
    "updated_at", "certificate_serial", "pinned_fingerprint", "public_key_sha256",
    "provisioned_at",
)  # fmt: skip


def _upsert(dialect_insert: type[sqlite.Insert] | type[postgresql.Insert]) -> Prepared:
    """INSERT, or UPDATE of every column when the device's row exists: one statement.

    The conflict is looked for on the device's id within its owner, and the row is
    updated only when it is this device's own (same row id). Another row holding that
    id for the owner is a clash the statement reports by writing nothing (row count 0):
    no constraint error, so on PostgreSQL no savepoint around it and nothing aborted.
    A device's owner and id never change, so its row id clashes with nothing else (if
    it did, the INSERT would fail on the primary key, and on PostgreSQL abort the unit).
    On PostgreSQL a clash locks the other row until the unit ends, as DO UPDATE does.
    """
    statement = dialect_insert(devices)
    changes = {name: statement.excluded[name] for name in _SAVED if name != "id"}
    return Prepared(
        statement.on_conflict_do_update(
            index_elements=[devices.c.owner, devices.c.device_id],
            set_=changes,
            where=devices.c.id == statement.excluded.id,
        )
    )


_UPSERT = {"sqlite": _upsert(sqlite.Insert), "postgresql": _upsert(postgresql.Insert)}
_COUNT = (
    select(func.count())
    .select_from(devices)
    .where(devices.c.enrollment_id == bindparam("enrollment_id"))
    .where(devices.c.status != DeviceStatus.RESET.value)
)
_RECORD = Prepared(insert(provisioning_records))
#: At most this many step records go in one multi-row INSERT on PostgreSQL.
_RECORDS_AT_ONCE = 16


@functools.lru_cache(maxsize=_RECORDS_AT_ONCE)
def _records(count: int) -> Prepared:
    """One INSERT of ``count`` step records, their values named ``<column>_<row>``:
    psycopg runs an ``executemany`` in its pipeline mode, which cost 120 µs of CPU more
    than one INSERT of the same four rows (bench/README.md, step 43)."""
    columns = provisioning_records.c
    return Prepared(
        insert(provisioning_records).values(
            [
                {c.key: bindparam(f"{c.key}_{i}", type_=c.type) for c in columns}
                for i in range(count)
            ]
        )
    )


# A nonce spent before inserts nothing (ON CONFLICT DO NOTHING: the row count says so).
_USE_NONCE = {
    name: Prepared(dialect.insert(used_nonces).on_conflict_do_nothing())
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
# PostgreSQL: the nonce spent and a device's lock taken in one statement. The INSERT's
# row comes from the CTE that takes the lock, so the lock is held before anything is
# written; the ON CONFLICT check sees every committed row whatever the statement's
# snapshot, and the device is read by the next statement, in a snapshot taken with the
# lock held.
_LOCKING = select(func.pg_advisory_xact_lock(bindparam("key")).label("locked")).cte("locking")
_USE_NONCE_LOCKING_DEVICE = Prepared(
    postgresql.insert(used_nonces)
    .from_select(
        ["scope", "nonce", "expires_at"],
        select(
            bindparam("scope", type_=used_nonces.c.scope.type),
            bindparam("nonce", type_=used_nonces.c.nonce.type),
            bindparam("expires_at", type_=used_nonces.c.expires_at.type),
        ).select_from(_LOCKING),
    )
    .on_conflict_do_nothing()
)


def _device_lock(owner: str, device_id: str) -> str:
    """The name :func:`~imprint.store.db.serialized` holds for one device."""
    return f"device:{owner}/{device_id}"


def _device(row: RowMapping | Mapping[str, Any]) -> Device:
    return Device(
        id=row["id"],
        owner=row["owner"],
        device_id=row["device_id"],
        enrollment_id=row["enrollment_id"],
        mechanism=row["mechanism"],
        status=DeviceStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        certificate_serial=row["certificate_serial"],
        pinned_fingerprint=row["pinned_fingerprint"],
        public_key_sha256=row["public_key_sha256"],
        provisioned_at=row["provisioned_at"],
    )


class SqlDeviceStore:
    """Implements :class:`imprint.provisioning.devices.DeviceStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def lock(self, owner: str, device_id: str) -> None:
        with writing(self._engine) as conn:
            serialized(conn, _device_lock(owner, device_id))

    def find(self, owner: str, device_id: str) -> Device | None:
        with reading(self._engine) as conn:
            rows = _FIND.rows(conn, {"owner": owner, "device_id": device_id})
        return _device(rows[0]) if rows else None

    def get(self, device_ref: str) -> Device:
        with reading(self._engine) as conn:
            rows = _GET.rows(conn, {"ref": device_ref})
        if not rows:
            raise NotFound(f"no device {device_ref!r}")
        return _device(rows[0])

    def save(self, device: Device) -> None:
        values = {
            "id": device.id,
            "owner": device.owner,
            "device_id": device.device_id,
            "enrollment_id": device.enrollment_id,
            "mechanism": device.mechanism,
            "status": device.status.value,
            "created_at": device.created_at,
            "updated_at": device.updated_at,
            "certificate_serial": device.certificate_serial,
            "pinned_fingerprint": device.pinned_fingerprint,
            "public_key_sha256": device.public_key_sha256,
            "provisioned_at": device.provisioned_at,
        }
        clash = Conflict(
            f"device {device.device_id!r} exists already for this owner", code="device_exists"
        )
        with writing(self._engine) as conn:
            upsert = _UPSERT.get(conn.dialect.name)
            if upsert is not None:
                if upsert.execute(conn, values) == 0:
                    raise clash
                return
            try:
                with guarded(conn):
                    if conn.execute(_UPDATE, {**values, "_ref": device.id}).rowcount == 0:
                        conn.execute(_INSERT, values)
            except IntegrityError:
                raise clash from None

    def find_with_holder(
        self, owner: str, device_id: str, public_key_sha256: str
    ) -> tuple[Device | None, Device | None]:
        values = {"owner": owner, "device_id": device_id, "key": public_key_sha256}
        with reading(self._engine) as conn:
            rows = _FIND_WITH_HOLDER.rows(conn, values)
        found: list[Device | None] = [None, None]
        for row in rows:
            found[int(row["holder"])] = _device(row)
        return found[0], found[1]

    def count_in_enrollment(self, enrollment_id: str) -> int:
        with reading(self._engine) as conn:
            return int(conn.execute(_COUNT, {"enrollment_id": enrollment_id}).scalar_one())

    def with_device_id(
        self, device_id: str, owners: Collection[str] | None = None, limit: int = 20
    ) -> Sequence[Device]:
        """The devices whose own id is ``device_id`` (of ``owners`` when given)."""
        query = select(devices).where(devices.c.device_id == device_id).limit(limit)
        if owners is not None:
            query = query.where(devices.c.owner.in_(sorted(owners)))
        with reading(self._engine) as conn:
            return [_device(row) for row in conn.execute(query).mappings()]

    def count(
        self,
        *,
        owner: str | None = None,
        enrollment_id: str | None = None,
        status: DeviceStatus | None = None,
        owners: Collection[str] | None = None,
    ) -> int:
        """How many devices match (the filters of :meth:`search`)."""
        query = select(func.count()).select_from(devices)
        if owners is not None:
            query = query.where(devices.c.owner.in_(sorted(owners)))
        if owner is not None:
            query = query.where(devices.c.owner == owner)
        if enrollment_id is not None:
            query = query.where(devices.c.enrollment_id == enrollment_id)
        if status is not None:
            query = query.where(devices.c.status == status.value)
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def search(
        self,
        *,
        owner: str | None = None,
        enrollment_id: str | None = None,
        status: DeviceStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        owners: Collection[str] | None = None,
    ) -> Sequence[Device]:
        query = select(devices).order_by(devices.c.id).limit(limit)
        if owners is not None:
            query = query.where(devices.c.owner.in_(sorted(owners)))
        if owner is not None:
            query = query.where(devices.c.owner == owner)
        if enrollment_id is not None:
            query = query.where(devices.c.enrollment_id == enrollment_id)
        if status is not None:
            query = query.where(devices.c.status == status.value)
        if after is not None:
            query = query.where(devices.c.id > after)
        with reading(self._engine) as conn:
            return [_device(row) for row in conn.execute(query).mappings()]


class SqlStepRecorder:
    """Implements :class:`imprint.provisioning.devices.StepRecorder`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, steps: Sequence[StepRecord]) -> None:
        if not steps:
            return
        rows = [
            {
                "id": str(uuid.uuid4()),
                "request_id": step.request_id,
                "mechanism": step.mechanism,
                "step": step.step.value,
                "status": step.status,
                "at": step.at,
                "device_ref": step.device_ref,
                "enrollment_id": step.enrollment_id,
                "registration_id": step.registration_id,
                "code": step.code,
                "detail": step.detail,
                "source": step.source,
            }
            for step in steps
        ]
        with writing(self._engine) as conn:
            if conn.dialect.name == "postgresql" and len(rows) <= _RECORDS_AT_ONCE:
                values = {
                    f"{key}_{i}": value for i, row in enumerate(rows) for key, value in row.items()
                }
                _records(len(rows)).execute(conn, values)
            else:
                _RECORD.execute(conn, rows)

    def for_device(self, device_ref: str, limit: int = 100) -> Sequence[StepRecord]:
        query = (
            select(provisioning_records)
            .where(provisioning_records.c.device_ref == device_ref)
            .order_by(provisioning_records.c.at, provisioning_records.c.id)
            .limit(limit)
        )
        with reading(self._engine) as conn:
            return [
                StepRecord(
                    request_id=row["request_id"],
                    mechanism=row["mechanism"],
                    step=ProvisioningStep(row["step"]),
                    status=row["status"],
                    at=row["at"],
                    device_ref=row["device_ref"],
                    enrollment_id=row["enrollment_id"],
                    registration_id=row["registration_id"],
                    code=row["code"],
                    detail=row["detail"],
                    source=row["source"],
                )
                for row in conn.execute(query).mappings()
            ]


class SqlNonceStore:
    """Implements :class:`imprint.provisioning.devices.NonceStore`; expired nonces are purged."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def use(
        self,
        scope: str,
        nonce: str,
        expires_at: datetime,
        *,
        alone: bool = False,
        lock_device: tuple[str, str] | None = None,
    ) -> bool:
        # In the request's unit of work (the use case spends the nonce in it, and again
        # with the journal of a refusal), or alone before a network call the unit must
        # not wait for; a nonce spent before is a row count of 0, not an error that
        # would abort a PostgreSQL transaction.
        if alone and lock_device is not None:
            raise ValueError("a device's lock is held by a unit of work, not a nonce alone")
        values: dict[str, Any] = {"scope": scope, "nonce": nonce, "expires_at": expires_at}
        with (own_transaction if alone else writing)(self._engine) as conn:
            if lock_device is not None and conn.dialect.name == "postgresql":
                values["key"] = lock_key(_device_lock(*lock_device))
                return _USE_NONCE_LOCKING_DEVICE.execute(conn, values) == 1
            spent = _USE_NONCE[conn.dialect.name].execute(conn, values) == 1
            if spent and lock_device is not None:
                serialized(conn, _device_lock(*lock_device))
            return spent

    def purge(self, before: datetime) -> int:
        with own_transaction(self._engine) as conn:
            return int(
                conn.execute(delete(used_nonces).where(used_nonces.c.expires_at < before)).rowcount
            )
