"""What every attestation mechanism shares: the evidence it reads, what it returns,
and the errors it raises. Attestors authorize; they never sign.

::

    AttestationFailed (403)              the evidence does not prove the identity
    ├── EvidenceMissing                  a field the mechanism needs is absent
    ├── IdentityNotEnrolled              no enrollment admits this identity
    ├── CertificateExpired               an expired IDevID without the opt-in
    ├── CertificateRevoked               on the manufacturer's CRL
    ├── CertificateDenied                on imprint's deny-list
    ├── IssuerUnknown                    no CA imprint knows issued the client chain
    ├── ChainIncomplete                  the client left out an intermediate CA
    ├── SelfSigned                       a self-signed client certificate
    ├── EkuMissing                       the certificate is not for client authentication
    ├── SignatureInvalid                 a wrong HMAC or signature
    ├── RequestExpired                   timestamp too old or in the future
    ├── ReplayDetected                   nonce seen before
    ├── KeyMismatch                      CSR key differs from the attested key
    ├── SecretExpired                    the out-of-band secret is past its validity
    ├── SecretUsed                       the out-of-band secret was used already
    └── IdentityTaken                    another certificate is pinned to this id
    TooManyAttempts (429)                failed attestations are rate limited
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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
    "ChainIncomplete",
    "CompletionAware",
    "EkuMissing",
    "Evidence",
    "EvidenceMissing",
    "IdentityNotEnrolled",
    "IdentityTaken",
    "IssuerUnknown",
    "KeyMismatch",
    "ReplayDetected",
    "RequestExpired",
    "SecretExpired",
    "SecretUsed",
    "SelfSigned",
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


class IssuerUnknown(AttestationFailed):
    code = "issuer_unknown"


class ChainIncomplete(AttestationFailed):
    code = "chain_incomplete"


class SelfSigned(AttestationFailed):
    code = "self_signed"


class EkuMissing(AttestationFailed):
    code = "eku_missing"


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


class SecretExpired(AttestationFailed):
    code = "secret_expired"


class SecretUsed(AttestationFailed):
    code = "secret_used"


class TooManyAttempts(ImprintError):
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything a device presented in one provisioning request.

    ``csr`` is None for a device that holds no key pair and collects only credentials
    (its channel): the midPoint-style registration. Mechanisms that bind the request
    to a key read it with :meth:`signing_request`.
    """

    mechanism: Mechanism
    csr: x509.CertificateSigningRequest | None
    at: datetime
    registration_id: str | None = None
    enrollment_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    client_certificate: x509.Certificate | None = None
    client_intermediates: tuple[x509.Certificate, ...] = ()
    source: str | None = None

    def signing_request(self) -> x509.CertificateSigningRequest:
        """The CSR, for mechanisms that need one.

        Raises:
            EvidenceMissing: the request carries no CSR.
        """
        if self.csr is None:
            raise EvidenceMissing(f"{self.mechanism.value}: a CSR is required")
        return self.csr


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


@runtime_checkable
class CompletionAware(Protocol):
    """An attestor that must learn when its attestation ended in a certificate.

    The Provisioner calls :meth:`completed` after an approved outcome (a new
    certificate, or the one already issued to a retry with the same key), never after
    a refusal or a pending request. One-time material is spent here, not in ``attest``,
    so a request refused by policy after attestation leaves it unused.
    """

    def completed(self, attestation: Attestation) -> None: ...
