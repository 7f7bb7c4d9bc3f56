"""What every attestation mechanism shares: the evidence it reads, what it returns,
and the errors it raises. Attestors authorize; they never sign.

An attestor answers with an :class:`Attestation`: the enrollment and device the
evidence proves, and the policy that comes with this kind of proof, as data the
provisioning use case applies (as smallstep's provisioners return sign options from
``AuthorizeSign``), never as flags it branches on:

- ``checks`` (:class:`RequestCheck`): applied first, before the enrollment's own policy;
  one may refuse, or hold the request (:class:`Hold`: 202, the device retries later),
  e.g. no out-of-band secret registered yet;
- ``device_checks`` (:class:`DeviceCheck`): applied to the device as the device lock
  holds it, so concurrent requests cannot both pass, e.g. an identity pinned to another
  certificate, or a one-time secret spent meanwhile;
- ``on_approved`` (:class:`ApprovalEffect`): run in the request's unit of work when it
  ends approved, e.g. spending the one-time secret: a refused request leaves it unspent,
  an approved one commits it with the certificate.

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
from typing import Any, Protocol

from cryptography import x509

from imprint.errors import ImprintError, InvalidRequest
from imprint.provisioning.devices import Device, Nonce
from imprint.provisioning.enrollments import Enrollment, Mechanism

__all__ = [
    "ApprovalEffect",
    "Attestation",
    "AttestationFailed",
    "Attestor",
    "CertificateDenied",
    "CertificateExpired",
    "CertificateRevoked",
    "ChainIncomplete",
    "DeviceCheck",
    "EkuMissing",
    "Evidence",
    "EvidenceMissing",
    "Hold",
    "IdentityNotEnrolled",
    "IdentityTaken",
    "IssuerUnknown",
    "KeyMismatch",
    "ReplayDetected",
    "RequestCheck",
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
class Hold:
    """A request that must wait (the answer is ``pending``; the device retries)."""

    reason: str


class RequestCheck(Protocol):
    """A check of the request, applied before the enrollment's policy and any lock."""

    def __call__(self, evidence: Evidence, /) -> Hold | None:
        """None to go on, a :class:`Hold` to keep the request waiting.

        Raises:
            AttestationFailed, PolicyDenied: the request is refused.
        """


class DeviceCheck(Protocol):
    """A check applied to the device as the device lock holds it."""

    def __call__(self, device: Device | None, /) -> None:
        """Return to go on.

        Args:
            device: the device now (None: never provisioned).

        Raises:
            AttestationFailed: the request is refused.
        """


class ApprovalEffect(Protocol):
    """What an approved request must also change, in its unit of work."""

    def __call__(self, at: datetime, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Attestation:
    """What an attestor vouches for: the enrollment and the device identity in it, what
    the device gets besides its certificate (``response_key`` seals the answer,
    ``pinned_fingerprint`` binds the device id to its manufacturer certificate), and the
    policy this proof brings (see the module's docstring)."""

    enrollment: Enrollment
    device_id: str
    identity: str
    response_key: bytes | None = None
    pinned_fingerprint: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)
    checks: tuple[RequestCheck, ...] = ()
    device_checks: tuple[DeviceCheck, ...] = ()
    on_approved: tuple[ApprovalEffect, ...] = ()
    #: The signed request's nonce, which the use case spends (see ``Nonce``).
    nonce: Nonce | None = None


class Attestor(Protocol):
    """One attestation mechanism.

    ``guessable`` says whether its evidence could be found by guessing (a secret a
    person chose or typed, a short key half): such attempts are limited before they
    are verified, per claimed identity and source; unguessable evidence (a signature,
    a 256-bit key) is verified first and only its refusals are counted
    (:mod:`imprint.provisioning.ratelimit`).
    """

    mechanism: Mechanism
    guessable: bool

    def attest(self, evidence: Evidence) -> Attestation:
        """Check the evidence.

        Raises:
            AttestationFailed: the evidence does not prove an enrolled identity.
            EvidenceMissing: the request lacks what this mechanism needs.
        """
        ...
