"""Device codes of the device authorization grant (RFC 8628) on SQL.

Every decision is one transaction on the row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite serializes writers), so two nodes polling or approving at once see one outcome.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine, RowMapping

from imprint.auth.device_codes import (
    SLOW_DOWN_STEP,
    DeviceAuthorization,
    DeviceState,
    PollAnswer,
)
from imprint.store.db import reading, writing
from imprint.store.tables import device_codes

__all__ = ["SqlDeviceCodeStore"]


def _record(row: RowMapping) -> DeviceAuthorization:
    return DeviceAuthorization(
        device_code_sha256=row["device_code_sha256"],
        user_code_sha256=row["user_code_sha256"],
        client_id=row["client_id"],
        scope=row["scope"],
        state=DeviceState(row["state"]),
        interval_seconds=row["interval_seconds"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        user_id=row["user_id"],
        org_id=row["org_id"],
        last_polled_at=row["last_polled_at"],
        decided_at=row["decided_at"],
    )


class SqlDeviceCodeStore:
    """Implements :class:`imprint.auth.device_codes.DeviceCodeStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, record: DeviceAuthorization) -> None:
        with writing(self._engine) as conn:
            # A day past their expiry, old codes go (a late poll still hears "expired").
            conn.execute(
                delete(device_codes).where(
                    device_codes.c.expires_at < record.created_at - timedelta(days=1)
                )
            )
            conn.execute(
                device_codes.insert().values(
                    device_code_sha256=record.device_code_sha256,
                    user_code_sha256=record.user_code_sha256,
                    client_id=record.client_id,
                    scope=record.scope,
                    state=record.state.value,
                    interval_seconds=record.interval_seconds,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                )
            )

    def pending(self, user_code_sha256: str, at: datetime) -> DeviceAuthorization | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(device_codes).where(
                        (device_codes.c.user_code_sha256 == user_code_sha256)
                        & (device_codes.c.state == DeviceState.PENDING.value)
                        & (device_codes.c.expires_at > at)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _record(row)

    def decide(
        self,
        user_code_sha256: str,
        *,
        approve: bool,
        user_id: str,
        org_id: str | None,
        at: datetime,
    ) -> DeviceAuthorization | None:
        where = (
            (device_codes.c.user_code_sha256 == user_code_sha256)
            & (device_codes.c.state == DeviceState.PENDING.value)
            & (device_codes.c.expires_at > at)
        )
        state = DeviceState.APPROVED if approve else DeviceState.DENIED
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(device_codes)
                .where(where)
                .values(state=state.value, user_id=user_id, org_id=org_id, decided_at=at)
            )
            if changed.rowcount != 1:
                return None
            row = (
                conn.execute(
                    select(device_codes).where(device_codes.c.user_code_sha256 == user_code_sha256)
                )
                .mappings()
                .one()
            )
        return _record(row)

    def poll(
        self, device_code_sha256: str, client_id: str, at: datetime
    ) -> tuple[PollAnswer, DeviceAuthorization | None]:
        where = device_codes.c.device_code_sha256 == device_code_sha256
        with writing(self._engine) as conn:
            row = conn.execute(select(device_codes).where(where).with_for_update()).mappings()
            found = row.first()
            if found is None:
                return PollAnswer.UNKNOWN, None
            record = _record(found)
            if record.client_id != client_id or record.state is DeviceState.USED:
                return PollAnswer.UNKNOWN, None
            if record.expires_at <= at:
                return PollAnswer.EXPIRED, None
            interval = record.interval_seconds
            last = record.last_polled_at
            if last is not None and at - last < timedelta(seconds=interval):
                conn.execute(
                    update(device_codes)
                    .where(where)
                    .values(last_polled_at=at, interval_seconds=interval + SLOW_DOWN_STEP)
                )
                return PollAnswer.SLOW_DOWN, None
            values: dict[str, object] = {"last_polled_at": at}
            if record.state is DeviceState.APPROVED:
                values["state"] = DeviceState.USED.value
            conn.execute(update(device_codes).where(where).values(**values))
        if record.state is DeviceState.PENDING:
            return PollAnswer.PENDING, None
        if record.state is DeviceState.DENIED:
            return PollAnswer.DENIED, None
        return PollAnswer.APPROVED, replace(record, state=DeviceState.USED, last_polled_at=at)
