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

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from imprint.clock import Clock
from imprint.errors import NotFound
from imprint.locks import Lock
from imprint.logs import get_logger
from imprint.pki.authority import CertificateAuthority, IssuanceRequest
from imprint.pki.der import subject_public_key_bits
from imprint.pki.profiles import OCSP_RESPONDER_PROFILE
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.pki.serials import serial_hex

__all__ = ["OcspAnswer", "OcspResponder"]

log = get_logger(__name__)

#: Kept answers per process, at most (a few hundred bytes each).
MAX_KEPT = 100_000

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
class _Question:
    """What one OCSP request asks."""

    serial: int
    algorithm: hashes.HashAlgorithm
    name_hash: bytes
    key_hash: bytes
    nonce: bytes | None

    @property
    def cacheable(self) -> bool:
        return self.nonce is None

    @property
    def cache_key(self) -> tuple[int, str]:
        return (self.serial, self.algorithm.name)


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
        self._lock = Lock()  # held across statements: see imprint.locks
        self._signer: _Signer | None = None
        self._kept: dict[tuple[int, str], _Kept] = {}

    def respond(self, der: bytes) -> OcspAnswer:
        """The DER OCSPResponse to a DER OCSPRequest; never raises for bad input. It may
        read the ledger and sign (and, once a week, have a responder certificate issued)."""
        parsed = self._parse(der)
        if isinstance(parsed, OcspAnswer):
            return parsed
        now = self._clock.now()
        kept = self._kept_for(parsed, now)
        if kept is not None:
            return kept
        record = self._record(parsed.serial)
        answer = self._sign(record, parsed, now)
        if parsed.cacheable and self._cache_for > timedelta(0) and answer.outcome != "unknown":
            # Unknown is not kept: the serial may be a reservation about to be issued.
            self._keep(parsed.cache_key, _Kept(answer, now + self._cache_for), now)
        return answer

    def answer_at_once(self, der: bytes) -> OcspAnswer | None:
        """The answer when it needs neither the ledger nor a signature (a refusal, or a
        kept response), else None: then :meth:`respond`."""
        parsed = self._parse(der)
        if isinstance(parsed, OcspAnswer):
            return parsed
        return self._kept_for(parsed, self._clock.now())

    def _parse(self, der: bytes) -> _Question | OcspAnswer:
        try:
            request = ocsp.load_der_ocsp_request(der)
            algorithm = request.hash_algorithm
            question = _Question(
                serial=request.serial_number,
                algorithm=algorithm,
                name_hash=request.issuer_name_hash,
                key_hash=request.issuer_key_hash,
                nonce=_nonce(request),
            )
        except (ValueError, TypeError, NotImplementedError):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed")
        hash_type = _HASHES.get(algorithm.name)
        if hash_type is None or not self._names_issuer(
            hash_type, question.name_hash, question.key_hash
        ):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
        return question

    def _kept_for(self, question: _Question, now: datetime) -> OcspAnswer | None:
        if not question.cacheable:
            return None
        kept = self._kept.get(question.cache_key)
        if kept is None or now >= kept.until:
            return None
        return OcspAnswer(kept.answer.der, kept.answer.outcome, cached=True)

    def certificate_changed(self, record: CertificateRecord) -> None:
        """Listener: forget what was kept about a certificate that changed."""
        serial = int(record.serial, 16)
        for key in list(self._kept):  # list(): request threads may add meanwhile
            if key[0] == serial:
                self._kept.pop(key, None)

    def forget(self) -> None:
        """Forget every kept answer (another node revoked a certificate)."""
        self._kept.clear()

    def _keep(self, key: tuple[int, str], kept: _Kept, now: datetime) -> None:
        """Keep an answer; past MAX_KEPT answers, drop the stale ones (or all)."""
        if len(self._kept) >= MAX_KEPT:
            for old in list(self._kept):
                entry = self._kept.get(old)
                if entry is not None and now >= entry.until:
                    self._kept.pop(old, None)
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
        self._kept[key] = kept

    def signer_due(self) -> bool:
        """Whether the next fresh answer first has a responder certificate issued (the
        first in this process, or a renewal): :meth:`respond` then writes to the ledger."""
        signer = self._signer
        return signer is None or self._clock.now() >= signer.renew_at

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
        self, record: CertificateRecord | None, question: _Question, now: datetime
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
                issuer_name_hash=question.name_hash,
                issuer_key_hash=question.key_hash,
                serial_number=question.serial,
                algorithm=question.algorithm,
                cert_status=status,
                this_update=this_update,
                next_update=this_update + self._validity,
                revocation_time=revocation_time,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
            .certificates([signer.certificate])
        )
        if question.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
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
