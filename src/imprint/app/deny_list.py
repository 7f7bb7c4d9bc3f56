"""Deny-list and manufacturer CRL operations, for every admin surface.

Both apply to every enrollment of the instance, so they belong to no organization: only
the whole instance (an API key, the local command line) reaches them; any other caller
is refused with ``instance_admin_required``. Attestation reads them on every request, so
a change reaches a running server once it commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from imprint.app.base import Operations
from imprint.attestation.revocation import (
    DeniedCertificate,
    ManufacturerCrl,
    import_crl,
    normalize_fingerprint,
)
from imprint.attestation.x509 import MAX_ENROLLMENTS, manufacturer_certificates
from imprint.errors import InvalidValue, NotFound
from imprint.provisioning.enrollments import Mechanism
from imprint.tenancy.access import Principal, require_instance_admin

__all__ = ["DenyListOperations"]

_DENY_LIST = "the deny-list"
_CRLS = "a manufacturer CRL"

MAX_REASON = 200


class DenyListOperations(Operations):
    # The deny-list -------------------------------------------------------------------

    def deny(self, principal: Principal, fingerprint_sha256: str, reason: str) -> DeniedCertificate:
        """Refuse the certificate of this SHA-256 fingerprint in every attestation.

        Raises:
            PermissionDenied: not the whole instance.
            InvalidValue: not a SHA-256 fingerprint, or a reason of other than 1 to 200
                characters.
            Conflict: it is on the deny-list already.
        """
        require_instance_admin(principal, _DENY_LIST)
        if not 1 <= len(reason) <= MAX_REASON:
            raise InvalidValue(f"reason: 1 to {MAX_REASON} characters")
        entry = DeniedCertificate(
            fingerprint_sha256=normalize_fingerprint(fingerprint_sha256),
            reason=reason,
            created_at=self._now().replace(microsecond=0),
        )
        with self._transaction():
            self._rt.deny_list.add(entry)
            self._audit(principal, "deny_list.add", "certificate", entry.fingerprint_sha256)
        return entry

    def search(
        self, principal: Principal, *, limit: int = 100, after: str | None = None
    ) -> Sequence[DeniedCertificate]:
        """The deny-list in fingerprint order (``after``: the last of the previous page)."""
        require_instance_admin(principal, _DENY_LIST)
        return self._rt.deny_list.search(limit=limit, after=after)

    def show(self, principal: Principal, fingerprint_sha256: str) -> DeniedCertificate:
        """Raises:
        NotFound: the certificate is not on the deny-list."""
        require_instance_admin(principal, _DENY_LIST)
        entry = self._rt.deny_list.first_of([normalize_fingerprint(fingerprint_sha256)])
        if entry is None:
            raise NotFound("this certificate is not on the deny-list")
        return entry

    def undeny(self, principal: Principal, fingerprint_sha256: str) -> str:
        """Accept the certificate again; its normalized fingerprint.

        Raises:
            NotFound: it is not on the deny-list.
        """
        require_instance_admin(principal, _DENY_LIST)
        fingerprint = normalize_fingerprint(fingerprint_sha256)
        with self._transaction():
            self._rt.deny_list.remove(fingerprint)
            self._audit(principal, "deny_list.remove", "certificate", fingerprint)
        return fingerprint

    # Manufacturer CRLs ---------------------------------------------------------------

    def upload_crl(self, principal: Principal, data: bytes) -> ManufacturerCrl:
        """Store a manufacturer CA's CRL (PEM, DER or base64 DER), replacing an older one
        of the same CA; it must be signed by a CA of an x509 enrollment.

        Raises:
            CrlInvalid, CrlIssuerUnknown, CrlSignatureInvalid, CrlOutdated: see
                :func:`imprint.attestation.revocation.import_crl`.
        """
        require_instance_admin(principal, _CRLS)
        at = self._now().replace(microsecond=0)
        with self._transaction():
            enrollments = self._rt.enrollments.search(
                mechanism=Mechanism.X509, limit=MAX_ENROLLMENTS
            )
            stored = import_crl(
                self._rt.manufacturer_crls,
                data,
                manufacturer_certificates(enrollments),
                at=at,
            )
            self._audit(principal, "manufacturer_crl.upload", "crl", stored.issuer_key_sha256)
        return stored

    def search_crls(self, principal: Principal, *, limit: int = 100) -> Sequence[ManufacturerCrl]:
        """The uploaded manufacturer CRLs, by issuer."""
        require_instance_admin(principal, _CRLS)
        return self._rt.manufacturer_crls.search(limit=limit)

    def show_crl(self, principal: Principal, issuer_key_sha256: str) -> ManufacturerCrl:
        """Raises:
        NotFound: no CRL of a CA with this key."""
        require_instance_admin(principal, _CRLS)
        found = self._rt.manufacturer_crls.get(normalize_fingerprint(issuer_key_sha256))
        if found is None:
            raise NotFound("no manufacturer CRL for this issuer key")
        return found

    def remove_crl(self, principal: Principal, issuer_key_sha256: str) -> str:
        """Forget a manufacturer CRL (its CA's certificates are no longer checked); the
        normalized issuer key.

        Raises:
            NotFound: no CRL of a CA with this key.
        """
        require_instance_admin(principal, _CRLS)
        issuer = normalize_fingerprint(issuer_key_sha256)
        with self._transaction():
            self._rt.manufacturer_crls.remove(issuer)
            self._audit(principal, "manufacturer_crl.remove", "crl", issuer)
        return issuer
