"""Renewal: a device proves it holds its current imprint certificate.

Over mutual TLS the handshake already proved possession of the key. Behind a
TLS-terminating proxy, or after the certificate expired (the handshake refuses an
expired certificate), the device sends a signed request instead: the same compact
JWS as x509's signed requests, with ``x5c`` holding its imprint certificate and
``aud`` naming the renewal URL.

Only the device's *current* certificate renews: a superseded or revoked one does not,
except that a device which never received its renewal's answer may present the
certificate that renewal superseded to collect it again (the provisioning use case
hands it out only for the key that renewal certified). After expiry, renewal is
accepted only within the enrollment's grace period.

Renewal is its own operation: :meth:`RenewalAuthorizer.authorize_renew` answers a
:class:`Renewal`, which :meth:`imprint.provisioning.service.Provisioner.renew` takes;
provisioning's attestors answer an :class:`~imprint.attestation.base.Attestation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from imprint.attestation.base import (
    CertificateExpired,
    CertificateRevoked,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
)
from imprint.attestation.jws import check_claims, verify_compact
from imprint.errors import NotFound
from imprint.pki.keys import public_key_sha256 as _key_sha256
from imprint.pki.records import CertificateLedger, CertificateStatus
from imprint.provisioning.devices import DeviceStore, Nonce
from imprint.provisioning.enrollments import Enrollment, EnrollmentStore

__all__ = ["Renewal", "RenewalAuthorizer"]

_MAX_SKEW_SECONDS = 300
_NONCE_LIFETIME = timedelta(seconds=600)


def _attribute(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    value = values[0].value if values else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a renewal is authorized for: the device, and the certificate it presented."""

    enrollment: Enrollment
    device_id: str
    presented_serial: str
    #: The signed request's nonce, which the use case spends (see ``Nonce``).
    nonce: Nonce | None = None

    @property
    def identity(self) -> str:
        return f"renewal:{self.presented_serial}"


class RenewalAuthorizer:
    """Authorizes renewals (as attestors authorize provisioning): never signs."""

    def __init__(
        self,
        *,
        issuing: x509.Certificate,
        ledger: CertificateLedger,
        devices: DeviceStore,
        enrollments: EnrollmentStore,
        audience: str,
    ) -> None:
        self._issuing = issuing
        self._ledger = ledger
        self._devices = devices
        self._enrollments = enrollments
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

    def authorize_renew(self, evidence: Evidence) -> Renewal:
        """Check that the evidence proves possession of a certificate the device may renew
        (or collect its renewal's answer with).

        Raises:
            AttestationFailed: not a certificate imprint issued to this device, revoked,
                expired past the grace period, or a replayed signed request.
            EvidenceMissing: neither mutual TLS nor a signed request.
        """
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
        if device is None:
            raise IdentityNotEnrolled("this is not the device's current certificate")
        # A certificate of this device that a concurrent renewal superseded between the
        # reads above passes: the use case decides under the device's lock (the key that
        # renewal certified gets its answer, any other key certificate_revoked).
        if device.certificate_serial != serial and not retry and record.device_ref != device.id:
            raise IdentityNotEnrolled("this is not the device's current certificate")
        enrollment = self._enrollments.get(device.enrollment_id)
        if evidence.at > current.not_valid_after_utc:
            grace = timedelta(days=enrollment.renewal_grace_days)
            if evidence.at > current.not_valid_after_utc + grace:
                raise CertificateExpired(
                    "the certificate expired and the enrollment's renewal grace period is over"
                )
        # Spent by the use case once this returns, so a refused signed request leaves no
        # trace.
        nonce = None
        if signed is not None:
            nonce = Nonce("renewal-jws", *signed, replayed="this signed request was used before")
        return Renewal(
            enrollment=enrollment, device_id=device.device_id, presented_serial=serial, nonce=nonce
        )
