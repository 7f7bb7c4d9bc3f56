"""The OCSP responder (RFC 6960, and RFC 5019's lightweight profile).

Responses are signed by a delegated responder certificate the issuing CA issues to the
service itself (``id-kp-OCSPSigning`` and ``id-pkix-ocsp-nocheck``, profile
``ocsp-responder``). Each server process makes its own key in memory at the first
request and has its certificate issued and recorded like any other; it is replaced
``responder_renew_before`` ahead of its expiry. The key is never written anywhere.

Answers come from the certificate ledger: ``good`` for an issued certificate of the
issuing CA, ``revoked`` with its time and reason, ``unknown`` for a serial the CA never
issued (or only reserved). A request naming another issuer is ``unauthorized``; one that
cannot be parsed is ``malformedRequest``.

A response to a request without a nonce is kept for ``cache_seconds`` and handed to
every such request for that certificate (RFC 5019). The responder is a certificate
listener: a revocation drops the kept response in the process that delivers the change,
and other worker processes drop theirs when it ages out. Requests with a nonce get a
fresh response echoing it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from imprint.clock import Clock
from imprint.errors import NotFound
from imprint.logs import get_logger
from imprint.pki.authority import CertificateAuthority, IssuanceRequest
from imprint.pki.der import subject_public_key_bits
from imprint.pki.profiles import OCSP_RESPONDER_PROFILE
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.pki.serials import serial_hex

__all__ = ["OcspAnswer", "OcspResponder"]

log = get_logger(__name__)

Outcome = Literal["good", "revoked", "unknown", "malformed", "unauthorized"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """A DER OCSPResponse and what it said."""

    der: bytes
    outcome: Outcome
    cached: bool = False


@dataclass(frozen=True, slots=True)
class _Signer:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    renew_at: datetime


@dataclass(frozen=True, slots=True)
class _Kept:
    answer: OcspAnswer
    until: datetime


class OcspResponder:
    """Answers OCSP requests about the issuing CA's certificates."""

    #: As a certificate listener it only needs revocations (see CertificateAuthority).
    revocations_only = True

    def __init__(
        self,
        authority: CertificateAuthority,
        *,
        clock: Clock,
        validity: timedelta,
        cache_for: timedelta,
        responder_validity: timedelta,
        renew_before: timedelta,
    ) -> None:
        self._authority = authority
        self._clock = clock
        self._validity = validity
        self._cache_for = min(cache_for, validity)
        self._responder_validity = responder_validity
        self._renew_before = min(renew_before, responder_validity / 2)
        self._issuer = authority.material.issuing
        self._issuer_name = self._issuer.subject.public_bytes()
        self._issuer_key = subject_public_key_bits(self._issuer)
        self._lock = threading.Lock()
        self._signer: _Signer | None = None
        self._kept: dict[tuple[int, str], _Kept] = {}

    def respond(self, der: bytes) -> OcspAnswer:
        """The DER OCSPResponse to a DER OCSPRequest; never raises for bad input."""
        try:
            request = ocsp.load_der_ocsp_request(der)
            algorithm = request.hash_algorithm
            serial = request.serial_number
            name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
            nonce = _nonce(request)
        except (ValueError, TypeError, NotImplementedError):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
        hash_type = _HASHES.get(algorithm.name)
        if hash_type is None or not self._names_issuer(hash_type, name_hash, key_hash):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
        now = self._clock.now()
        cache_key = (serial, algorithm.name)
        if nonce is None and self._cache_for > timedelta(0):
            kept = self._kept.get(cache_key)
            if kept is not None and now < kept.until:
                return OcspAnswer(kept.answer.der, kept.answer.outcome, cached=True)
        record = self._record(serial)
        answer = self._sign(record, serial, hash_type(), name_hash, key_hash, nonce, now)
        if nonce is None and self._cache_for > timedelta(0) and answer.outcome != "unknown":
            # Unknown is not kept: the serial may be a reservation about to be issued.
            self._kept[cache_key] = _Kept(answer, now + self._cache_for)
        return answer

    def certificate_changed(self, record: CertificateRecord) -> None:
        """Listener: forget what was kept about a certificate that changed."""
        serial = int(record.serial, 16)
        for key in [k for k in self._kept if k[0] == serial]:
            self._kept.pop(key, None)

    def responder_certificate(self) -> x509.Certificate:
        """The current responder certificate (made or renewed if it is due)."""
        return self._current_signer(self._clock.now()).certificate

    def _names_issuer(
        self, hash_type: type[hashes.HashAlgorithm], name_hash: bytes, key_hash: bytes
    ) -> bool:
        def digest(data: bytes) -> bytes:
            h = hashes.Hash(hash_type())
            h.update(data)
            return h.finalize()

        return digest(self._issuer_name) == name_hash and digest(self._issuer_key) == key_hash

    def _record(self, serial: int) -> CertificateRecord | None:
        try:
            record = self._authority.ledger.get(serial_hex(serial))
        except NotFound:
            return None
        return record if record.issuer == self._authority.issuing_id else None

    def _sign(
        self,
        record: CertificateRecord | None,
        serial: int,
        algorithm: hashes.HashAlgorithm,
        name_hash: bytes,
        key_hash: bytes,
        nonce: bytes | None,
        now: datetime,
    ) -> OcspAnswer:
        signer = self._current_signer(now)
        this_update = now.replace(microsecond=0)
        revocation_time = reason = None
        if record is not None and record.status is CertificateStatus.REVOKED:
            outcome: Outcome = "revoked"
            status = ocsp.OCSPCertStatus.REVOKED
            revocation_time = record.revoked_at or this_update
            if record.revocation_reason not in (None, x509.ReasonFlags.unspecified.value):
                reason = x509.ReasonFlags(record.revocation_reason)
        elif record is not None and record.status is CertificateStatus.ISSUED:
            outcome, status = "good", ocsp.OCSPCertStatus.GOOD
        else:
            outcome, status = "unknown", ocsp.OCSPCertStatus.UNKNOWN
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=status,
                this_update=this_update,
                next_update=this_update + self._validity,
                revocation_time=revocation_time,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
            .certificates([signer.certificate])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(signer.key, hashes.SHA256())
        return OcspAnswer(response.public_bytes(serialization.Encoding.DER), outcome)

    def _current_signer(self, now: datetime) -> _Signer:
        signer = self._signer
        if signer is not None and now < signer.renew_at:
            return signer
        with self._lock:
            signer = self._signer
            if signer is None or now >= signer.renew_at:
                signer = self._new_signer()
                self._signer = signer
                self._kept.clear()
            return signer

    def _new_signer(self) -> _Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self._authority.issue(
            IssuanceRequest(
                public_key=key.public_key(),
                profile=OCSP_RESPONDER_PROFILE,
                common_name="imprint OCSP Responder",
                validity=self._responder_validity,
                requested_by="imprint:ocsp",
            )
        )
        certificate = issued.certificate
        log.info("ocsp_responder_certificate_issued", serial=issued.record.serial)
        return _Signer(certificate, key, certificate.not_valid_after_utc - self._renew_before)


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        extension = request.extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        return None
    return extension.value.nonce


def _unsuccessful(status: ocsp.OCSPResponseStatus, outcome: Outcome) -> OcspAnswer:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return OcspAnswer(response.public_bytes(serialization.Encoding.DER), outcome)
