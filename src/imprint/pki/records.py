"""What the authority records about certificates, and the ledger interface it needs."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

__all__ = ["CertificateLedger", "CertificateRecord", "CertificateStatus", "RevokedEntry"]


class CertificateStatus(StrEnum):
    """Life of a certificate record: reserved before signing, issued after.

    ``abandoned``: reserved by a request that died before it marked the record issued
    (found at start-up); no answer carried the certificate, so none is in the field.
    """

    PENDING = "pending"
    ISSUED = "issued"
    FAILED = "failed"
    REVOKED = "revoked"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    serial: str
    issuer: str
    profile: str
    subject: str
    sans: tuple[str, ...]
    status: CertificateStatus
    not_before: datetime
    not_after: datetime
    requested_by: str
    created_at: datetime
    issued_at: datetime | None = None
    fingerprint_sha256: str | None = None
    der: bytes | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    owner: str | None = None  # the organization it was issued for; None: instance-wide
    device_ref: str | None = None  # the device it was issued to; None: not a device's


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: str
    revoked_at: datetime
    reason: str


class CertificateLedger(Protocol):
    """Durable record of every certificate the authority signs."""

    def reserve(self, record: CertificateRecord) -> bool:
        """Store a PENDING record, committed before the certificate is signed; False
        when nothing was written because the caller's unit of work commits the record
        and the signed certificate together (:meth:`mark_issued` writes it whole).

        Raises:
            Conflict: the serial is recorded already.
        """

    def mark_issued(
        self,
        serial: str,
        der: bytes,
        fingerprint: str,
        at: datetime,
        *,
        unreserved: CertificateRecord | None = None,
    ) -> None:
        """Attach the signed certificate to its record; with ``unreserved`` (a record
        :meth:`reserve` did not write), write that record, issued.

        Raises:
            Conflict: ``unreserved``'s serial is recorded already.
        """

    def mark_failed(self, serial: str) -> None:
        """Signing did not happen; the record stays for the audit trail."""

    def revoke(self, serial: str, reason: str, at: datetime) -> CertificateRecord:
        """Mark a record revoked; raise NotFound or Conflict."""

    def get(self, serial: str) -> CertificateRecord:
        """Return one record; raise NotFound."""

    def search(
        self,
        *,
        status: CertificateStatus | None = None,
        expiring_before: datetime | None = None,
        limit: int = 100,
        after_serial: str | None = None,
        owners: Collection[str] | None = None,
    ) -> Sequence[CertificateRecord]:
        """Records ordered by serial, optionally filtered (``owners``: only records
        issued for these organizations; None: all)."""

    def valid_for_device(self, device_ref: str, now: datetime) -> Sequence[CertificateRecord]:
        """The device's certificates that are issued, not revoked and not yet expired."""

    def abandon_pending(self, created_before: datetime) -> Sequence[str]:
        """Mark PENDING records reserved before ``created_before`` abandoned; their serials."""

    def revoked(self, issuer: str) -> Sequence[RevokedEntry]:
        """Every revoked serial of one issuer (for its CRL)."""

    def next_crl_number(self, issuer: str, at: datetime) -> int:
        """Allocate the next CRL number of ``issuer`` (monotonic, starting at 1)."""
