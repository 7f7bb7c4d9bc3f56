"""Identity certificates for client applications (the plgd d2d client).

An identity certificate names an *owner* (an organization id, the owner claim of the
caller's token) in its common name and is signed under the ``client`` profile. All
entities holding a certificate of the same CA form one security domain, so the owner's
identity is one key at a time: while a certificate for the owner is valid and not
revoked, a request with another key is refused; a request with the same key gets that
certificate back, or a fresh one once two thirds of its lifetime have passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.clock import Clock, SystemClock
from imprint.errors import Conflict
from imprint.pki.authority import CertificateAuthority, IssuanceRequest
from imprint.pki.csr import check_public_key
from imprint.pki.profiles import subject_name

__all__ = [
    "CLAIM_GRACE",
    "CurrentIdentity",
    "IdentityCertificate",
    "IdentityIssuer",
    "IdentityKeyConflict",
    "IdentityStore",
    "renewal_due",
    "spki_sha256",
]

#: How long a claim whose certificate is being signed binds the owner to its key.
CLAIM_GRACE = timedelta(minutes=2)


class IdentityKeyConflict(Conflict):
    """The owner's identity certificate is valid and holds another key."""

    code = "identity_key_conflict"


def spki_sha256(key: object) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: the key's fingerprint."""
    public_key = check_public_key(key)
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class CurrentIdentity:
    """The owner's valid identity certificate, as the store found it."""

    serial: str
    der: bytes


class IdentityStore(Protocol):
    """Which key holds each owner's identity."""

    def claim(
        self, owner: str, spki_sha256: str, requested_by: str, at: datetime, *, reuse: bool
    ) -> CurrentIdentity | None:
        """Atomically bind ``owner`` to the key, or find the current certificate.

        Returns the owner's valid certificate for this key when ``reuse`` allows it and
        one exists and is not due for renewal; otherwise records a claim for this key
        (to be completed by :meth:`record`) and returns None.

        Raises:
            IdentityKeyConflict: a valid certificate, or a fresh claim, holds another key.
        """

    def record(self, owner: str, spki_sha256: str, serial: str, not_after: datetime) -> None:
        """Complete the claim with the signed certificate."""

    def release(self, owner: str, spki_sha256: str) -> None:
        """Drop an uncompleted claim (signing failed)."""


@dataclass(frozen=True, slots=True)
class IdentityCertificate:
    """What the client receives."""

    owner: str
    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    trust_anchors: tuple[x509.Certificate, ...]
    reused: bool

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    def certificate_pem(self) -> str:
        return _pem(self.certificate)

    def chain_pem(self) -> str:
        """The certificate, then each CA below the root."""
        return "".join(_pem(c) for c in (self.certificate, *self.intermediates))

    def trust_anchors_pem(self) -> list[str]:
        return [_pem(c) for c in self.trust_anchors]


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


class IdentityIssuer:
    """Signs identity certificates: the CN is the owner, whatever the CSR says."""

    def __init__(
        self, authority: CertificateAuthority, store: IdentityStore, clock: Clock | None = None
    ) -> None:
        self._authority = authority
        self._store = store
        self._clock = clock or SystemClock()

    def sign(
        self, csr: x509.CertificateSigningRequest, owner: str, *, requested_by: str
    ) -> IdentityCertificate:
        """Issue (or hand back) the identity certificate of ``owner`` for the CSR's key.

        Args:
            csr: a parsed CSR whose signature was checked (:func:`imprint.pki.csr.load_csr`).
            owner: the organization id the certificate names.
            requested_by: who asked, for the certificate ledger.

        Raises:
            IdentityKeyConflict: the owner's valid identity holds another key.
            InvalidValue: an owner id that cannot be a common name.
        """
        public_key = check_public_key(csr.public_key())
        fingerprint = spki_sha256(public_key)
        subject_name(owner)  # an owner id that cannot be a CN fails before any claim
        now = self._clock.now()
        current = self._store.claim(owner, fingerprint, requested_by, now, reuse=True)
        intermediates = self._authority.chain[:-1]
        anchors = self._authority.trust_anchors
        if current is not None:
            certificate = x509.load_der_x509_certificate(current.der)
            return IdentityCertificate(owner, certificate, intermediates, anchors, reused=True)
        try:
            issued = self._authority.issue(
                IssuanceRequest(
                    public_key=public_key,
                    profile="client",
                    common_name=owner,
                    requested_by=requested_by,
                    owner=owner,
                )
            )
        except Exception:
            self._store.release(owner, fingerprint)
            raise
        self._store.record(owner, fingerprint, issued.record.serial, issued.record.not_after)
        return IdentityCertificate(owner, issued.certificate, intermediates, anchors, reused=False)


def renewal_due(not_before: datetime, not_after: datetime, at: datetime) -> bool:
    """True once two thirds of a certificate's lifetime have passed."""
    return at >= not_after - (not_after - not_before) / 3
