"""The certificate authority: the only place that signs.

Issuance follows record → sign → mark: a PENDING record with the serial is written
before the signature is made, and the record is marked ISSUED with the certificate
afterwards. Outside a unit of work the record commits on its own before the signature,
so a crash between the steps leaves a PENDING record (resolved as abandoned at the next
start), never an unknown certificate. Inside one (provisioning), the record and the
signed certificate are one INSERT after the signature, committed with everything else
the request changes before any answer carries the certificate: a crash before that
commit leaves no record and no certificate in the field, as a reservation written
first and rolled back with the unit would.

Issuance and revocation tell the certificate listeners through the outbox (a message
written in the same transaction, delivered until done), so a crash after the commit
cannot leave, say, the MQTT broker's CRL behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import lru_cache, partial
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.audit import StateChange
from imprint.clock import Clock, SystemClock
from imprint.errors import InvalidValue, NotFound
from imprint.locks import Lock
from imprint.logs import get_logger
from imprint.outbox import Outbox
from imprint.pki.csr import IssuablePublicKey, check_public_key
from imprint.pki.material import CAMaterial
from imprint.pki.profiles import (
    CertificateProfile,
    Publication,
    parse_sans,
    profile_named,
    subject_name,
)
from imprint.pki.records import CertificateLedger, CertificateRecord, CertificateStatus
from imprint.pki.serials import normalize_serial, random_serial, serial_hex
from imprint.pki.signing import CASigner
from imprint.settings import ProfileSettings

__all__ = [
    "REVOCATION_REASONS",
    "AuthorityEvents",
    "CertificateAuthority",
    "CertificateListener",
    "IssuanceRequest",
    "IssuedCertificate",
    "PreparedCertificate",
    "parse_reason",
]

# RFC 5280 reason codes by their ASN.1 names. "removeFromCRL" belongs to delta CRLs and
# "certificateHold" would need a release that imprint does not offer: revocation is final.
REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold)
}
_BACKDATE = timedelta(minutes=5)
log = get_logger(__name__)
_CRL_CACHE_SECONDS = 60.0
#: The outbox message that tells the certificate listeners about a change.
CERTIFICATE_CHANGED = "certificate.changed"


def parse_reason(text: str) -> x509.ReasonFlags:
    """Accept ``keyCompromise``, ``key-compromise`` or ``key_compromise``.

    Raises:
        InvalidValue: an unknown reason.
    """
    wanted = text.replace("-", "").replace("_", "").lower()
    for name, flag in REVOCATION_REASONS.items():
        if name.lower() == wanted:
            return flag
    raise InvalidValue(
        f"unknown revocation reason {text!r}; known: {', '.join(REVOCATION_REASONS)}"
    )


class AuthorityEvents(Protocol):
    def certificate_issued(self, profile: str) -> None: ...
    def certificate_revoked(self, reason: str) -> None: ...


class CertificateListener(Protocol):
    """Told after a certificate was issued or revoked (e.g. to update a broker's files).

    It runs from the outbox once the change has committed: at once in the process that
    made it, else by the next delivery round (at least once; what it does must be
    idempotent). What it raises makes the outbox retry the message later. It returns the
    change of state it made, for the audit log, or None when it changed nothing.
    """

    def certificate_changed(self, record: CertificateRecord) -> StateChange | None: ...


# A listener may also set ``revocations_only = True``: then an issuance alone does not
# queue an outbox message for it (it is still told when one is queued for another).


@dataclass(frozen=True, slots=True)
class IssuanceRequest:
    public_key: IssuablePublicKey
    profile: str
    common_name: str | None
    sans: Sequence[str] = ()
    organization: str | None = None
    organizational_unit: str | None = None
    validity: timedelta | None = None
    requested_by: str = "system"
    owner: str | None = None  # the organization it is for (scoping); None: instance-wide
    device_ref: str | None = None  # the device it is for; None: not a device's


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """A certificate made ready to sign (:meth:`CertificateAuthority.prepare`): its record,
    still PENDING, and its builder with everything but the signature, and the CA material
    it names as its issuer (the key :meth:`CertificateAuthority.sign` signs with). Made
    only by ``prepare``, whose checks it carries, and signed once: its serial is its
    record's key, so a second signing is refused by the ledger."""

    record: CertificateRecord
    builder: x509.CertificateBuilder
    material: CAMaterial


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    certificate: x509.Certificate
    record: CertificateRecord
    chain: tuple[x509.Certificate, ...]  # issuing CA first, root last

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def chain_pem(self, leaf_pem: str | None = None) -> str:
        """The leaf (``leaf_pem`` when the caller has it already) followed by every CA
        certificate up to and including the root."""
        return (leaf_pem or self.pem()) + "".join(ca_pems(self.chain))


@lru_cache(maxsize=32)
def ca_pems(certificates: tuple[x509.Certificate, ...]) -> tuple[str, ...]:
    """The PEM of each CA certificate: the same few after every issuance, so encoded
    once (a new CA is a new certificate, hence a new key here)."""
    return tuple(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def key_id(certificate: x509.Certificate) -> str:
    """Hex subject key identifier: how the ledger names an issuer."""
    ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return ski.digest.hex()


@dataclass
class _CachedCRL:
    crl: x509.CertificateRevocationList
    made: float


class CertificateAuthority:
    """Issues, revokes and publishes CRLs for one issuing CA under one root."""

    def __init__(
        self,
        material: CAMaterial,
        ledger: CertificateLedger,
        *,
        profiles: ProfileSettings,
        base_url: str,
        crl_validity: timedelta,
        publication: Publication | None = None,
        events: AuthorityEvents | None = None,
        outbox: Outbox | None = None,
        after_commit: Callable[[Callable[[], object]], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.material = material
        self._ledger = ledger
        self._profiles = profiles
        self._base_url = base_url.rstrip("/")
        self._crl_validity = crl_validity
        self._events = events
        self._crl_cache: dict[str, _CachedCRL] = {}
        self._crl_lock = Lock()  # held across statements: see imprint.locks
        self._listeners: list[CertificateListener] = []
        self._revocation_observers: list[Callable[[CertificateRecord], None]] = []
        self._outbox = outbox
        self._after_commit = after_commit or _at_once
        self._clock = clock or SystemClock()
        self.issuing_id = key_id(material.issuing)
        self.root_id = key_id(material.root)
        self._publication = publication

    def on_revoked(self, observer: Callable[[CertificateRecord], None]) -> None:
        """Call ``observer`` with every revoked record, in the revoking transaction (it
        may write there, e.g. an outbox message; its failure fails the revocation)."""
        self._revocation_observers.append(observer)

    def add_listener(self, listener: CertificateListener) -> None:
        """Call ``listener`` after every issuance and revocation from now on."""
        self._listeners.append(listener)

    def _changed(self, record: CertificateRecord) -> None:
        """Queue telling the listeners, in the caller's transaction. A listener that
        says ``revocations_only`` costs issuance nothing."""
        revoked = record.status is CertificateStatus.REVOKED
        if not any(revoked or not getattr(x, "revocations_only", False) for x in self._listeners):
            return
        if self._outbox is None:
            self._after_commit(lambda: self.tell_listeners(record.serial))
        else:
            self._outbox.add(CERTIFICATE_CHANGED, {"serial": record.serial})

    def tell_listeners(self, serial: str) -> list[StateChange]:
        """Tell every listener the record of ``serial`` as it is now (the outbox's handler
        of ``certificate.changed``); the changes they made. A listener that raises makes
        it raise (a retry)."""
        record = self._ledger.get(serial)
        failed: list[Exception] = []
        changes: list[StateChange] = []
        for listener in self._listeners:
            try:
                change = listener.certificate_changed(record)
            except Exception as exc:
                log.exception("certificate_listener_failed", serial=serial)
                failed.append(exc)
                continue
            if change is not None:
                changes.append(change)
        if failed:
            raise failed[0]
        return changes

    @property
    def ledger(self) -> CertificateLedger:
        return self._ledger

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self.material.chain

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        return (self.material.root,)

    def profile(self, name: str) -> CertificateProfile:
        return profile_named(name, self._profiles)

    def publication(self) -> Publication:
        """Where issued certificates say their CRL, issuer and OCSP responder are: the
        configured public URLs, else this server's own."""
        configured = self._publication
        return Publication(
            crl_url=(configured and configured.crl_url)
            or f"{self._base_url}/crl/{self.issuing_id}.crl",
            issuer_url=(configured and configured.issuer_url) or f"{self._base_url}/ca/issuing.crt",
            ocsp_url=(configured and configured.ocsp_url) or f"{self._base_url}/ocsp",
        )

    def issue(self, request: IssuanceRequest) -> IssuedCertificate:
        """Sign a certificate for ``request`` under its profile: :meth:`prepare`, then
        :meth:`sign`.

        The record is written before the signature (see the module's docstring); the
        listeners are told once the caller's transaction commits.

        Raises:
            UnknownProfile: no such profile.
            InvalidValue: bad names, missing SANs for the server profile, bad validity.
            UnsupportedKey: a key type we do not issue for.
        """
        return self.sign(self.prepare(request))

    def prepare(self, request: IssuanceRequest) -> PreparedCertificate:
        """Check ``request`` and make its certificate ready to sign: the serial, the
        names, the validity (from now) and the profile's extensions, and its record.
        Nothing is written or signed: a request that may yet be refused (a registration
        before it takes the device's lock) prepares first, so that its commit group's
        write phase holds the writer lock for less. Its times are taken now: the record's
        ``created_at`` and ``issued_at`` may come a lock's wait before the signature, and
        the five minutes ``not_before`` goes back cover that wait.

        Raises:
            UnknownProfile, InvalidValue, UnsupportedKey: as :meth:`issue`.
        """
        profile = self.profile(request.profile)
        public_key = check_public_key(request.public_key)
        subject = subject_name(
            request.common_name, request.organization, request.organizational_unit
        )
        sans = parse_sans(request.sans)
        if not sans and not list(subject):
            raise InvalidValue("a certificate needs a common name or a subject alternative name")
        validity = profile.validity if request.validity is None else request.validity
        if validity <= timedelta(0):
            raise InvalidValue("validity must be positive")
        material = self.material
        issuer = material.issuing
        now = self._clock.now().replace(microsecond=0)
        not_before = max(now - _BACKDATE, issuer.not_valid_before_utc)
        not_after = min(now + validity, issuer.not_valid_after_utc)
        if not_after <= now:
            raise InvalidValue("the issuing CA has expired")
        extensions = profile.extensions(
            public_key=public_key,
            issuer=issuer,
            sans=sans,
            has_subject=bool(list(subject)),
            publication=self.publication(),
        )
        serial = random_serial()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        record = CertificateRecord(
            serial=serial_hex(serial),
            issuer=self.issuing_id,
            profile=profile.name,
            subject=subject.rfc4514_string(),
            sans=tuple(_san_text(name) for name in sans),
            status=CertificateStatus.PENDING,
            not_before=not_before,
            not_after=not_after,
            requested_by=request.requested_by,
            created_at=now,
            owner=request.owner,
            device_ref=request.device_ref,
        )
        return PreparedCertificate(record, builder, material)

    def sign(
        self, prepared: PreparedCertificate, device_ref: str | None = None
    ) -> IssuedCertificate:
        """Record, sign and mark the certificate ``prepared`` (``device_ref``, when given,
        the device it is for, decided since).

        Raises:
            Exception: what the signer raises (the record is then marked failed).
        """
        record = prepared.record
        if device_ref is not None:
            record = replace(record, device_ref=device_ref)
        now = record.created_at
        reserved = self._ledger.reserve(record)
        try:
            certificate = prepared.material.issuing_signer.sign_certificate(prepared.builder)
        except Exception:
            if reserved:
                self._ledger.mark_failed(record.serial)
            raise
        der = certificate.public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        self._ledger.mark_issued(
            record.serial, der, fingerprint, now, unreserved=None if reserved else record
        )
        if self._events:
            events, name = self._events, record.profile
            self._after_commit(lambda: events.certificate_issued(name))
        issued = replace(
            record,
            status=CertificateStatus.ISSUED,
            der=der,
            fingerprint_sha256=fingerprint,
            issued_at=now,
        )
        self._changed(issued)
        return IssuedCertificate(
            certificate=certificate, record=issued, chain=prepared.material.chain
        )

    def revoke(self, serial: str, reason: x509.ReasonFlags) -> CertificateRecord:
        """Revoke a certificate, in the caller's transaction when there is one; the CRLs
        this process serves list it once that commits.

        Raises:
            NotFound: no such serial.
            Conflict: already revoked, or never issued.
        """
        serial = normalize_serial(serial)
        record = self._ledger.revoke(serial, reason.value, self._clock.now().replace(microsecond=0))
        self._after_commit(partial(self._revoked, record.issuer, reason.value))
        self._changed(record)
        for observer in self._revocation_observers:
            observer(record)
        return record

    def forget_crls(self) -> None:
        """Drop the cached CRLs (another node revoked a certificate): the next request
        makes them anew."""
        with self._crl_lock:
            self._crl_cache.clear()

    def _revoked(self, issuer: str, reason: str) -> None:
        with self._crl_lock:
            self._crl_cache.pop(issuer, None)
        if self._events:
            self._events.certificate_revoked(reason)

    def _issuer(self, name: str) -> tuple[str, x509.Certificate, CASigner]:
        if name in ("issuing", self.issuing_id):
            return self.issuing_id, self.material.issuing, self.material.issuing_signer
        if name in ("root", self.root_id) and self.material.root_signer is not None:
            return self.root_id, self.material.root, self.material.root_signer
        raise NotFound(f"no CRL for issuer {name!r}")

    def crl(self, issuer_name: str = "issuing") -> x509.CertificateRevocationList:
        """The current CRL of an issuer ("issuing", "root" or a key id).

        CRLs are cached for a minute per process and re-made at once after a
        revocation in this process, or in another one (told through
        :func:`imprint.store.cache.on_change`).

        Raises:
            NotFound: an unknown issuer, or the root when its key is not held.
        """
        issuer_id, certificate, key = self._issuer(issuer_name)
        clock = self._clock.now()
        with self._crl_lock:
            cached = self._crl_cache.get(issuer_id)
            if cached and clock.timestamp() - cached.made < _CRL_CACHE_SECONDS:
                return cached.crl
            now = clock.replace(microsecond=0)
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(certificate.subject)
                .last_update(now)
                .next_update(now + self._crl_validity)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                        certificate.extensions.get_extension_for_class(
                            x509.SubjectKeyIdentifier
                        ).value
                    ),
                    critical=False,
                )
                .add_extension(
                    x509.CRLNumber(self._ledger.next_crl_number(issuer_id, now)), critical=False
                )
            )
            for entry in self._ledger.revoked(issuer_id):
                revoked = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(entry.serial, 16))
                    .revocation_date(entry.revoked_at)
                )
                if entry.reason != x509.ReasonFlags.unspecified.value:
                    revoked = revoked.add_extension(
                        x509.CRLReason(x509.ReasonFlags(entry.reason)), critical=False
                    )
                builder = builder.add_revoked_certificate(revoked.build())
            crl = key.sign_crl(builder)
            self._crl_cache[issuer_id] = _CachedCRL(crl, clock.timestamp())
            return crl


def _at_once(callback: Callable[[], object]) -> None:
    callback()


def _san_text(name: x509.GeneralName) -> str:
    return str(name.value)
