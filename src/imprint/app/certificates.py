"""Certificate operations: issue from a CSR, list, show and revoke.

Certificates are scoped by the organization they were issued for: viewers read,
operators revoke, a foreign certificate is "not found". Issuing a certificate of any
name from a CSR, and certificates issued for no organization, belong to the whole
instance (an admin API key, or the local command line).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from imprint.app.base import Operations, Page
from imprint.app.scoping import scope_of, visible_certificate
from imprint.pki.authority import IssuanceRequest, IssuedCertificate, parse_reason
from imprint.pki.csr import common_name as common_name_of
from imprint.pki.csr import load_csr
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.store.listing import Order
from imprint.tenancy.access import Principal, require_instance_admin
from imprint.tenancy.roles import Role

__all__ = ["CertificateOperations"]


class CertificateOperations(Operations):
    def issue(
        self,
        principal: Principal,
        csr: str | bytes,
        profile: str = "device",
        common_name: str | None = None,
        sans: Sequence[str] = (),
        validity_days: int | None = None,
    ) -> IssuedCertificate:
        """Sign a certificate for the key of ``csr`` (PEM or DER); only its key and, by
        default, its common name are used. ``requested_by`` is the principal.

        The record, the signed certificate and the audit entry commit together, before
        the caller hands out the certificate.

        Raises:
            PermissionDenied: not the whole instance (code ``instance_admin_required``).
            InvalidCSR, CSRSignatureInvalid, UnsupportedKey: a bad CSR.
            UnknownProfile, InvalidValue: no such profile, bad names or validity.
        """
        require_instance_admin(principal, "a certificate of any name")
        request = load_csr(csr)
        with self._transaction():
            issued = self._rt.authority.issue(
                IssuanceRequest(
                    public_key=request.public_key(),  # type: ignore[arg-type]  # checked by load_csr
                    profile=profile,
                    common_name=common_name or common_name_of(request),
                    sans=list(sans),
                    validity=timedelta(days=validity_days) if validity_days else None,
                    requested_by=principal.actor,
                )
            )
            self._audit(principal, "certificate.issue", "certificate", issued.record.serial)
        return issued

    def search(
        self,
        principal: Principal,
        *,
        status: CertificateStatus | None = None,
        expiring_within: timedelta | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[CertificateRecord]:
        """Certificates the principal sees, ordered by serial (``after``: the last serial
        of the previous page); ``expiring_within``: only those not after now + this."""
        before = self._now() + expiring_within if expiring_within is not None else None
        return self._rt.ledger.search(
            status=status,
            expiring_before=before,
            limit=limit,
            after_serial=after,
            owners=scope_of(self._rt, principal),
        )

    def page(
        self,
        principal: Principal,
        *,
        status: CertificateStatus | None = None,
        expiring_within: timedelta | None = None,
        limit: int = 100,
        after: str | None = None,
        text: str | None = None,
        unexpired: bool = False,
        device_ref: str | None = None,
        order: Order | None = None,
        offset: int = 0,
    ) -> Page[CertificateRecord]:
        """One page of :meth:`search`, with the total that match and the next cursor.

        ``text`` matches serial, subject or device id; ``unexpired``: only those whose
        ``not_after`` is still ahead; ``order``/``offset`` page a sorted list (the
        cursor then is only meaningful for the default order, by serial).
        """
        now = self._now()
        before = now + expiring_within if expiring_within is not None else None
        filters: dict[str, Any] = {
            "status": status,
            "expiring_before": before,
            "expiring_after": now if unexpired else None,
            "owners": scope_of(self._rt, principal),
            "text": text,
            "device_ref": device_ref,
        }
        found = self._rt.ledger.search(
            limit=limit + 1, after_serial=after, order=order, offset=offset, **filters
        )
        total = self._rt.ledger.count(**filters)
        items = list(found[:limit])
        return Page(items, total, items[-1].serial if len(found) > limit else None)

    def get(self, principal: Principal, serial: str) -> CertificateRecord:
        """One certificate.

        Raises:
            InvalidValue: not a hexadecimal serial.
            NotFound: no such certificate, or a foreign one.
        """
        return visible_certificate(self._rt, principal, serial, Role.VIEWER)

    def revoke(
        self, principal: Principal, serial: str, reason: str = "unspecified"
    ) -> CertificateRecord:
        """Revoke a certificate; the CRLs list it once this commits, and the certificate
        listeners (e.g. the MQTT broker's) hear of it through the outbox.

        Raises:
            InvalidValue: a bad serial or an unknown reason.
            NotFound, PermissionDenied: not visible, or the role is too low.
            Conflict: already revoked, or never issued.
        """
        with self._transaction():
            visible = visible_certificate(self._rt, principal, serial, Role.OPERATOR)
            flag = parse_reason(reason)
            record = self._rt.authority.revoke(visible.serial, flag)
            self._audit(
                principal,
                "certificate.revoke",
                "certificate",
                record.serial,
                org_id=record.owner,
                reason=flag.value,
            )
        return record
