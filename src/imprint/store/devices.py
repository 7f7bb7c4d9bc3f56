"""Devices, provisioning step records and used nonces on SQL."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.provisioning.devices import (
    Device,
    DeviceStatus,
    ProvisioningStep,
    StepRecord,
)
from imprint.store.tables import devices, provisioning_records, used_nonces

__all__ = ["SqlDeviceStore", "SqlNonceStore", "SqlStepRecorder"]


def _device(row: RowMapping) -> Device:
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

    def find(self, owner: str, device_id: str) -> Device | None:
        query = select(devices).where(devices.c.owner == owner, devices.c.device_id == device_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _device(row)

    def get(self, device_ref: str) -> Device:
        with self._engine.connect() as conn:
            row = conn.execute(select(devices).where(devices.c.id == device_ref)).mappings().first()
        if row is None:
            raise NotFound(f"no device {device_ref!r}")
        return _device(row)

    def save(self, device: Device) -> None:
        values = {**asdict(device), "status": device.status.value}
        try:
            with self._engine.begin() as conn:
                changed = conn.execute(
                    update(devices).where(devices.c.id == device.id).values(**values)
                ).rowcount
                if changed == 0:
                    conn.execute(insert(devices).values(**values))
        except IntegrityError:
            raise Conflict(
                f"device {device.device_id!r} exists already for this owner", code="device_exists"
            ) from None

    def count_in_enrollment(self, enrollment_id: str) -> int:
        query = (
            select(func.count())
            .select_from(devices)
            .where(devices.c.enrollment_id == enrollment_id)
            .where(devices.c.status != DeviceStatus.RESET.value)
        )
        with self._engine.connect() as conn:
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
        with self._engine.connect() as conn:
            return [_device(row) for row in conn.execute(query).mappings()]


class SqlStepRecorder:
    """Implements :class:`imprint.provisioning.devices.StepRecorder`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, steps: Sequence[StepRecord]) -> None:
        if not steps:
            return
        rows = [
            {**asdict(step), "id": str(uuid.uuid4()), "step": step.step.value} for step in steps
        ]
        with self._engine.begin() as conn:
            conn.execute(insert(provisioning_records), rows)

    def for_device(self, device_ref: str, limit: int = 100) -> Sequence[StepRecord]:
        query = (
            select(provisioning_records)
            .where(provisioning_records.c.device_ref == device_ref)
            .order_by(provisioning_records.c.at, provisioning_records.c.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
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

    def use(self, scope: str, nonce: str, expires_at: datetime) -> bool:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(used_nonces).values(scope=scope, nonce=nonce, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True

    def purge(self, before: datetime) -> int:
        with self._engine.begin() as conn:
            return int(
                conn.execute(delete(used_nonces).where(used_nonces.c.expires_at < before)).rowcount
            )
