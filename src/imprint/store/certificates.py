"""The certificate ledger on SQL."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.pki.records import CertificateRecord, CertificateStatus, RevokedEntry
from imprint.store.cache import notify
from imprint.store.db import Prepared, in_unit_of_work, own_transaction, reading, writing
from imprint.store.listing import Order, SortKeys, contains
from imprint.store.tables import certificates, crl_numbers, devices

#: The orders of certificate lists (the API's is by serial).
CERTIFICATE_SORT = SortKeys(
    {
        "serial": certificates.c.serial,
        "subject": certificates.c.subject,
        "status": certificates.c.status,
        "not_after": certificates.c.not_after,
        "created": certificates.c.created_at,
    },
    tie_breaker=certificates.c.serial,
    default=Order("serial"),
)


def _filtered(
    query: Any,
    *,
    status: CertificateStatus | None,
    expiring_before: datetime | None,
    expiring_after: datetime | None,
    owners: Collection[str] | None,
    text: str | None,
    device_ref: str | None,
) -> Any:
    """The WHERE of :meth:`SqlCertificateLedger.search` and ``count`` (one copy)."""
    c = certificates.c
    if owners is not None:
        query = query.where(c.owner.in_(sorted(owners)))
    if status is not None:
        query = query.where(c.status == status.value)
    if expiring_before is not None:
        query = query.where(c.not_after < expiring_before)
    if expiring_after is not None:
        query = query.where(c.not_after > expiring_after)
    if device_ref is not None:
        query = query.where(c.device_ref == device_ref)
    if text:
        pattern = contains(text)
        named = select(devices.c.id).where(devices.c.device_id.ilike(pattern, escape="\\"))
        query = query.where(
            or_(
                c.serial.ilike(pattern, escape="\\"),
                c.subject.ilike(pattern, escape="\\"),
                c.device_ref.in_(named),
            )
        )
    return query


__all__ = ["CERTIFICATE_SORT", "REVOCATIONS", "SqlCertificateLedger"]

#: The change notified to the other nodes when a certificate is revoked.
REVOCATIONS = "revocations"

# The statements of the issuing path, built once (see store/devices.py).
# A serial that exists already inserts nothing (the caller sees a Conflict): no error, so
# no savepoint is needed to keep a shared PostgreSQL transaction usable after it.
_RESERVE = {
    name: Prepared(dialect.insert(certificates).on_conflict_do_nothing())
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_MARK_ISSUED = (
    update(certificates)
    .where(certificates.c.serial == bindparam("_serial"))
    .values(
        # A record revoked while it was being signed stays revoked.
        status=case(
            (
                certificates.c.status == CertificateStatus.PENDING.value,
                CertificateStatus.ISSUED.value,
            ),
            else_=certificates.c.status,
        ),
        der=bindparam("_der"),
        fingerprint_sha256=bindparam("_fingerprint"),
        issued_at=bindparam("_at"),
    )
)
_GET = select(certificates).where(certificates.c.serial == bindparam("_serial"))


def _record(row: RowMapping) -> CertificateRecord:
    return CertificateRecord(
        serial=row["serial"],
        issuer=row["issuer"],
        profile=row["profile"],
        subject=row["subject"],
        sans=tuple(json.loads(row["sans"])),
        status=CertificateStatus(row["status"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        issued_at=row["issued_at"],
        fingerprint_sha256=row["fingerprint_sha256"],
        der=row["der"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        owner=row["owner"],
        device_ref=row["device_ref"],
    )


class SqlCertificateLedger:
    """Implements :class:`imprint.pki.records.CertificateLedger` on SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def reserve(self, record: CertificateRecord) -> bool:
        if in_unit_of_work(self._engine):
            # The unit commits the record with its signature or not at all: one INSERT
            # after the signature (mark_issued) says the same as this one before it.
            return False
        with writing(self._engine) as conn:  # committed before the signature
            self._insert(conn, record)
        return True

    @staticmethod
    def _insert(conn: Connection, record: CertificateRecord, **issued: Any) -> None:
        values: dict[str, Any] = {
            "serial": record.serial,
            "issuer": record.issuer,
            "profile": record.profile,
            "subject": record.subject,
            "sans": json.dumps(list(record.sans)),
            "status": record.status.value,
            "not_before": record.not_before,
            "not_after": record.not_after,
            "requested_by": record.requested_by,
            "created_at": record.created_at,
            "owner": record.owner,
            "device_ref": record.device_ref,
            **issued,
        }
        if _RESERVE[conn.dialect.name].execute(conn, values) == 0:
            raise Conflict(f"serial {record.serial} is already recorded")

    def mark_issued(
        self,
        serial: str,
        der: bytes,
        fingerprint: str,
        at: datetime,
        *,
        unreserved: CertificateRecord | None = None,
    ) -> None:
        with writing(self._engine) as conn:
            if unreserved is not None:
                self._insert(
                    conn,
                    unreserved,
                    status=CertificateStatus.ISSUED.value,
                    der=der,
                    fingerprint_sha256=fingerprint,
                    issued_at=at,
                )
                return
            conn.execute(
                _MARK_ISSUED,
                {"_serial": serial, "_der": der, "_fingerprint": fingerprint, "_at": at},
            )

    def mark_failed(self, serial: str) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == serial)
                .where(certificates.c.status == CertificateStatus.PENDING.value)
                .values(status=CertificateStatus.FAILED.value)
            )

    def revoke(self, serial: str, reason: str, at: datetime) -> CertificateRecord:
        with writing(self._engine) as conn:
            row = (
                conn.execute(select(certificates).where(certificates.c.serial == serial))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"no certificate with serial {serial}")
            status = CertificateStatus(row["status"])
            if status is CertificateStatus.REVOKED:
                raise Conflict(f"certificate {serial} is already revoked", code="already_revoked")
            if status in (CertificateStatus.FAILED, CertificateStatus.ABANDONED):
                raise Conflict(f"certificate {serial} was never issued", code="not_issued")
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == serial)
                .values(
                    status=CertificateStatus.REVOKED.value, revoked_at=at, revocation_reason=reason
                )
            )
            notify(conn, REVOCATIONS)  # other nodes drop the CRLs they cached
            updated = (
                conn.execute(select(certificates).where(certificates.c.serial == serial))
                .mappings()
                .one()
            )
        return _record(updated)

    def get(self, serial: str) -> CertificateRecord:
        with reading(self._engine) as conn:
            row = conn.execute(_GET, {"_serial": serial}).mappings().first()
        if row is None:
            raise NotFound(f"no certificate with serial {serial}")
        return _record(row)

    def count(
        self,
        *,
        status: CertificateStatus | None = None,
        expiring_before: datetime | None = None,
        owners: Collection[str] | None = None,
        text: str | None = None,
        expiring_after: datetime | None = None,
        device_ref: str | None = None,
    ) -> int:
        """How many match the filters of :meth:`search`."""
        query = _filtered(
            select(func.count()).select_from(certificates),
            status=status,
            expiring_before=expiring_before,
            expiring_after=expiring_after,
            owners=owners,
            text=text,
            device_ref=device_ref,
        )
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def search(
        self,
        *,
        status: CertificateStatus | None = None,
        expiring_before: datetime | None = None,
        limit: int = 100,
        after_serial: str | None = None,
        owners: Collection[str] | None = None,
        text: str | None = None,
        expiring_after: datetime | None = None,
        device_ref: str | None = None,
        order: Order | None = None,
        offset: int = 0,
    ) -> Sequence[CertificateRecord]:
        """Certificates that match, by serial (``after_serial``: the last of the previous
        page), or in ``order`` (a key of :data:`CERTIFICATE_SORT`) from ``offset``.

        ``text`` matches the serial, the subject or the device id of the device it was
        issued to; ``expiring_after``/``expiring_before`` bound ``not_after``.
        """
        query = _filtered(
            select(certificates),
            status=status,
            expiring_before=expiring_before,
            expiring_after=expiring_after,
            owners=owners,
            text=text,
            device_ref=device_ref,
        )
        query = query.order_by(*CERTIFICATE_SORT.clauses(order)).limit(limit)
        if after_serial is not None:
            query = query.where(certificates.c.serial > after_serial)
        if offset:
            query = query.offset(offset)
        with reading(self._engine) as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def valid_for_device(self, device_ref: str, now: datetime) -> Sequence[CertificateRecord]:
        query = (
            select(certificates)
            .where(certificates.c.device_ref == device_ref)
            .where(certificates.c.status == CertificateStatus.ISSUED.value)
            .where(certificates.c.not_after > now)
            .order_by(certificates.c.created_at, certificates.c.serial)
        )
        with reading(self._engine) as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def abandon_pending(self, created_before: datetime) -> Sequence[str]:
        with writing(self._engine) as conn:
            rows = conn.execute(
                update(certificates)
                .where(certificates.c.status == CertificateStatus.PENDING.value)
                .where(certificates.c.created_at < created_before)
                .values(status=CertificateStatus.ABANDONED.value)
                .returning(certificates.c.serial)
            )
            return sorted(row.serial for row in rows)

    def revoked(self, issuer: str) -> Sequence[RevokedEntry]:
        query = (
            select(
                certificates.c.serial, certificates.c.revoked_at, certificates.c.revocation_reason
            )
            .where(certificates.c.issuer == issuer)
            .where(certificates.c.status == CertificateStatus.REVOKED.value)
            .order_by(certificates.c.serial)
        )
        with reading(self._engine) as conn:
            return [
                RevokedEntry(
                    serial=row.serial, revoked_at=row.revoked_at, reason=row.revocation_reason
                )
                for row in conn.execute(query)
            ]

    def next_crl_number(self, issuer: str, at: datetime) -> int:
        # Its own commit: a CRL number, once handed out, is never handed out again.
        with own_transaction(self._engine) as conn:
            result = conn.execute(
                update(crl_numbers)
                .where(crl_numbers.c.issuer == issuer)
                .values(number=crl_numbers.c.number + 1, updated_at=at)
                .returning(crl_numbers.c.number)
            ).scalar()
            if result is not None:
                return int(result)
            try:
                with conn.begin_nested():
                    conn.execute(
                        crl_numbers.insert().values(issuer=issuer, number=1, updated_at=at)
                    )
            except IntegrityError:
                # Another node created the row first; take the next number after it.
                result = conn.execute(
                    update(crl_numbers)
                    .where(crl_numbers.c.issuer == issuer)
                    .values(number=crl_numbers.c.number + 1, updated_at=at)
                    .returning(crl_numbers.c.number)
                ).scalar_one()
                return int(result)
            return 1
