"""Renewal: a device proves it holds its current imprint certificate.

Over mutual TLS the handshake already proved possession of the key. Behind a
TLS-terminating proxy, or after the certificate expired (the handshake refuses an
expired certificate), the device sends a signed request instead: the same compact
JWS as x509's signed requests, with ``x5c`` holding its imprint certificate and
``aud`` naming the renewal URL.

Only the device's *current* certificate renews: a superseded or revoked one does not.
After expiry, renewal is accepted only within the enrollment's grace period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from imprint.attestation.base import (
    Attestation,
    CertificateExpired,
    CertificateRevoked,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
    ReplayDetected,
)
from imprint.attestation.jws import check_claims, verify_compact
from imprint.errors import NotFound
from imprint.pki.keys import public_key_sha256 as _key_sha256
from imprint.pki.records import CertificateLedger, CertificateStatus
from imprint.provisioning.devices import DeviceStore, NonceStore
from imprint.provisioning.enrollments import EnrollmentStore, Mechanism

__all__ = ["RenewalAttestor"]

_MAX_SKEW_SECONDS = 300
_NONCE_LIFETIME = timedelta(seconds=600)


def _attribute(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    value = values[0].value if values else None
    return value if isinstance(value, str) else None


class RenewalAttestor:
    mechanism = Mechanism.RENEWAL

    def __init__(
        self,
        *,
        issuing: x509.Certificate,
        ledger: CertificateLedger,
        devices: DeviceStore,
        enrollments: EnrollmentStore,
        nonces: NonceStore,
        audience: str,
    ) -> None:
        self._issuing = issuing
        self._ledger = ledger
        self._devices = devices
        self._enrollments = enrollments
        self._nonces = nonces
        self._audience = audience

    def _current(self, evidence: Evidence) -> tuple[x509.Certificate, tuple[str, datetime] | None]:
        """The certificate to renew, and a signed request's nonce with its expiry."""
        token = evidence.fields.get("jws")
        if token is not None:
            verified = verify_compact(token)
            nonce, iat = check_claims(
                verified,
                csr=evidence.signing_request(),
                audience=self._audience,
                at=evidence.at,
                max_skew_seconds=_MAX_SKEW_SECONDS,
            )
            return verified.leaf, (nonce, datetime.fromtimestamp(iat, UTC) + _NONCE_LIFETIME)
        if evidence.client_certificate is not None:
            return evidence.client_certificate, None
        raise EvidenceMissing(
            "renewal: present the current certificate over mutual TLS, "
            "or send a signed request in evidence.jws"
        )

    def attest(self, evidence: Evidence) -> Attestation:
        current, signed = self._current(evidence)
        if current.issuer != self._issuing.subject:
            raise IdentityNotEnrolled("only certificates imprint issued can be renewed")
        try:
            current.verify_directly_issued_by(self._issuing)
        except (ValueError, TypeError, InvalidSignature):
            raise IdentityNotEnrolled("only certificates imprint issued can be renewed") from None
        serial = format(current.serial_number, "x")
        try:
            record = self._ledger.get(serial)
        except NotFound:
            raise IdentityNotEnrolled("imprint has no record of this certificate") from None
        device_id = _attribute(current, NameOID.COMMON_NAME)
        owner = _attribute(current, NameOID.ORGANIZATIONAL_UNIT_NAME)
        device = self._devices.find(owner, device_id) if owner and device_id else None
        retry = False
        if record.status is CertificateStatus.REVOKED:
            # A device that crashed before storing its renewed certificate comes back with
            # the one that renewal superseded and the key it certified: it may collect it.
            retry = (
                record.revocation_reason == "superseded"
                and device is not None
                and device.public_key_sha256 is not None
                and evidence.csr is not None
                and _key_sha256(evidence.csr.public_key()) == device.public_key_sha256
            )
            if not retry:
                raise CertificateRevoked(f"certificate {serial} has been revoked")
        if device is None or (device.certificate_serial != serial and not retry):
            raise IdentityNotEnrolled("this is not the device's current certificate")
        enrollment = self._enrollments.get(device.enrollment_id)
        if evidence.at > current.not_valid_after_utc:
            grace = timedelta(days=enrollment.renewal_grace_days)
            if evidence.at > current.not_valid_after_utc + grace:
                raise CertificateExpired(
                    "the certificate expired and the enrollment's renewal grace period is over"
                )
        # Spent last, so a refused signed request leaves no trace.
        if signed is not None and not self._nonces.use("renewal-jws", *signed):
            raise ReplayDetected("this signed request was used before")
        return Attestation(
            enrollment=enrollment,
            device_id=device.device_id,
            identity=f"renewal:{serial}",
            renewal=True,
            renewal_retry=retry,
            renews=serial,
        )
