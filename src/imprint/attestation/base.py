"""What every attestation mechanism shares: the evidence it reads, what it returns,
and the errors it raises. Attestors authorize; they never sign.

::

    AttestationFailed (403)              the evidence does not prove the identity
    ├── EvidenceMissing                  a field the mechanism needs is absent
    ├── IdentityNotEnrolled              no enrollment admits this identity
    ├── CertificateExpired               an expired IDevID without the opt-in
    ├── CertificateRevoked               on the manufacturer's CRL
    ├── CertificateDenied                on imprint's deny-list
    ├── SignatureInvalid                 a wrong HMAC or signature
    ├── RequestExpired                   timestamp too old or in the future
    ├── ReplayDetected                   nonce seen before
    ├── KeyMismatch                      CSR key differs from the attested key
    └── IdentityTaken                    another certificate is pinned to this id
    TooManyAttempts (429)                failed attestations are rate limited
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509

from imprint.errors import ImprintError, InvalidRequest
from imprint.provisioning.enrollments import Enrollment, Mechanism

__all__ = [
    "Attestation",
    "AttestationFailed",
    "Attestor",
    "CertificateDenied",
    "CertificateExpired",
    "CertificateRevoked",
    "Evidence",
    "EvidenceMissing",
    "IdentityNotEnrolled",
    "IdentityTaken",
    "KeyMismatch",
    "ReplayDetected",
    "RequestExpired",
    "SignatureInvalid",
    "TooManyAttempts",
]


class AttestationFailed(ImprintError):
    code = "attestation_failed"


class EvidenceMissing(InvalidRequest):
    code = "evidence_missing"


class IdentityNotEnrolled(AttestationFailed):
    code = "not_enrolled"


class CertificateExpired(AttestationFailed):
    code = "certificate_expired"


class CertificateRevoked(AttestationFailed):
    code = "certificate_revoked"


class CertificateDenied(AttestationFailed):
    code = "certificate_denied"


class SignatureInvalid(AttestationFailed):
    code = "signature_invalid"


class RequestExpired(AttestationFailed):
    code = "request_expired"


class ReplayDetected(AttestationFailed):
    code = "replay_detected"


class KeyMismatch(AttestationFailed):
    code = "key_mismatch"


class IdentityTaken(AttestationFailed):
    code = "identity_taken"


class TooManyAttempts(ImprintError):
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything a device presented in one provisioning request."""

    mechanism: Mechanism
    csr: x509.CertificateSigningRequest
    at: datetime
    registration_id: str | None = None
    enrollment_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    client_certificate: x509.Certificate | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Attestation:
    """What an attestor vouches for: the enrollment and the device identity in it."""

    enrollment: Enrollment
    device_id: str
    identity: str
    response_key: bytes | None = None
    pinned_fingerprint: str | None = None
    waiting: bool = False
    claims: Mapping[str, str] = field(default_factory=dict)


class Attestor(Protocol):
    """One attestation mechanism."""

    mechanism: Mechanism

    def attest(self, evidence: Evidence) -> Attestation:
        """Check the evidence.

        Raises:
            AttestationFailed: the evidence does not prove an enrolled identity.
            EvidenceMissing: the request lacks what this mechanism needs.
        """
        ...
