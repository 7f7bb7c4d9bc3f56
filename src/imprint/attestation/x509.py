"""x509 attestation: the device proves it holds a manufacturer certificate (IDevID).

The device certificate comes from the mutual-TLS handshake, or from a signed request
(``evidence.jws``, see :mod:`imprint.attestation.jws`) for devices behind a proxy that
terminates TLS. Either way the same checks follow:

1. the certificate is not on the deny-list;
2. it chains to the manufacturer chain of an enabled x509 enrollment (only the named
   one when the request gives ``enrollment_id``), checked with
   ``cryptography.x509.verification``: a client certificate with ``clientAuth`` in its
   extended key usage, under the enrollment's root, through its intermediates. With a
   ``lead_certificate_name`` the path must go through that certificate. When several
   enrollments admit the certificate, the one whose identifying certificate (the lead
   certificate, else the nearest certificate of its chain) sits closest to the device
   certificate wins;
3. an expired device certificate is accepted only by an enrollment that opted in
   (``accept_expired``); the manufacturer's CA certificates must be valid now anyway;
4. no certificate of the path is on its issuer's uploaded CRL, nor on the deny-list;
5. the device id is read from the certificate (never from the request), and a device
   already provisioned with another certificate keeps its id (``identity_taken``).

A signed request's nonce is not spent here: it goes back in the attestation, and the
use case spends it in the request's unit of work, so a request refused here changes
nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from imprint.attestation.base import (
    Attestation,
    AttestationFailed,
    CertificateExpired,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
    IdentityTaken,
)
from imprint.attestation.jws import check_claims, verify_compact
from imprint.attestation.peer_chain import refuse_without_client_auth
from imprint.attestation.revocation import (
    DenyList,
    ManufacturerCrlStore,
    certificate_fingerprint,
    check_revocation,
    refuse_denied,
)
from imprint.errors import NotFound
from imprint.provisioning.devices import Device, DeviceStatus, Nonce
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentStore,
    Mechanism,
    X509Material,
)

__all__ = [
    "NONCE_SCOPE",
    "DeviceIdUnavailable",
    "EnrollmentAmbiguous",
    "X509Attestor",
    "device_id_from",
    "manufacturer_certificates",
]

NONCE_SCOPE = "x509-jws"
MAX_ENROLLMENTS = 10_000
MAX_DEVICE_ID = 200


class DeviceIdUnavailable(AttestationFailed):
    """The device certificate lacks the value the enrollment takes the device id from."""

    code = "device_id_unavailable"


class EnrollmentAmbiguous(AttestationFailed):
    """Two enrollments admit the certificate equally; the request must name one."""

    code = "enrollment_ambiguous"


def _require_client_auth(
    _policy: object, _certificate: x509.Certificate, extension: x509.ExtendedKeyUsage | None
) -> None:
    if extension is None or ExtendedKeyUsageOID.CLIENT_AUTH not in extension:
        raise ValueError("the device certificate needs clientAuth in its extended key usage")


# Like imprint.pki.chain: a SAN may be present but need not be; unlike it, the device
# certificate must say it is for client authentication.
_IDEVID_EE = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_client_auth)
)


def _may_sign_certificates(
    _policy: object, _certificate: x509.Certificate, extension: x509.KeyUsage | None
) -> None:
    if extension is not None and not extension.key_cert_sign:
        raise ValueError("a CA certificate's key usage must include keyCertSign")


# Manufacturer PKIs are not the Web PKI: roots made with openssl's defaults carry no key
# usage at all. RFC 5280 reads a missing one as unrestricted; a present one must allow
# certificate signing. Everything else (CA basic constraints, ...) as the Web PKI.
_IDEVID_CA = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _may_sign_certificates
)


@functools.lru_cache(maxsize=256)
def _chain_of(pems: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    return tuple(X509Material(certificate_chain=pems).certificates())


def manufacturer_certificates(enrollments: Sequence[Enrollment]) -> list[x509.Certificate]:
    """Every CA certificate of the x509 enrollments' chains, without duplicates, in the
    order first seen (a certificate is equal to, and hashes as, its DER)."""
    seen: dict[x509.Certificate, None] = {}
    for enrollment in enrollments:
        if enrollment.x509 is not None:
            seen.update(dict.fromkeys(_chain_of(enrollment.x509.certificate_chain)))
    return list(seen)


def _names(certificate: x509.Certificate) -> set[str]:
    """What a lead certificate name may be: the RFC 4514 subject or any attribute value."""
    subject = certificate.subject
    return {subject.rfc4514_string()} | {str(a.value) for a in subject}


def _attribute(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) and value else None


def device_id_from(certificate: x509.Certificate, rule: DeviceIdRule) -> str:
    """The device id the enrollment's rule reads from the device certificate.

    ``common-name`` is the subject's CN, ``serial-number`` the subject's serialNumber
    attribute, ``registration-id`` the certificate's serial number in lowercase hex.

    Raises:
        DeviceIdUnavailable: the certificate has no such value, or it is too long.
    """
    if rule is DeviceIdRule.COMMON_NAME:
        value = _attribute(certificate, NameOID.COMMON_NAME)
        what = "a common name (CN)"
    elif rule is DeviceIdRule.SERIAL_NUMBER:
        value = _attribute(certificate, NameOID.SERIAL_NUMBER)
        what = "a serialNumber attribute in its subject"
    else:
        value, what = format(certificate.serial_number, "x"), "a serial number"
    if value is None:
        raise DeviceIdUnavailable(
            f"the device certificate has no {what} to take the device id from"
        )
    if len(value) > MAX_DEVICE_ID:
        raise DeviceIdUnavailable(
            f"the device id from the certificate exceeds {MAX_DEVICE_ID} chars"
        )
    return value


@dataclass(frozen=True, slots=True)
class _Match:
    enrollment: Enrollment
    chain: tuple[x509.Certificate, ...]  # leaf first, manufacturer root last
    depth: int  # where the enrollment's identifying certificate is in the chain


@dataclass(frozen=True, slots=True)
class _Presented:
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    nonce: str | None = None
    nonce_expires: datetime | None = None


class X509Attestor:
    """Attests a device by its manufacturer certificate (IDevID)."""

    mechanism = Mechanism.X509
    guessable = False

    def __init__(
        self,
        *,
        enrollments: EnrollmentStore,
        deny_list: DenyList,
        crls: ManufacturerCrlStore,
        audience: str,
        max_skew_seconds: int = 300,
        nonce_lifetime_seconds: int = 600,
    ) -> None:
        self._enrollments = enrollments
        self._deny_list = deny_list
        self._crls = crls
        self._audience = audience
        self._max_skew = max_skew_seconds
        self._nonce_lifetime = nonce_lifetime_seconds

    def attest(self, evidence: Evidence) -> Attestation:
        """Check the manufacturer certificate and name the device.

        Raises:
            EvidenceMissing: neither a client certificate nor ``evidence.jws``.
            EkuMissing: the device certificate's extended key usage lacks clientAuth.
            SignedRequestMalformed, SignatureInvalid, AudienceMismatch, RequestExpired,
                KeyMismatch: the signed request is not acceptable (its nonce is returned in
                the attestation, for the use case to spend).
            CertificateDenied: a certificate of the path is on the deny-list.
            CertificateExpired: the device certificate expired and no enrollment
                admitting it accepts expired ones (or it is not valid yet).
            IdentityNotEnrolled: no enrollment admits the certificate.
            EnrollmentAmbiguous: two enrollments admit it equally.
            CertificateRevoked: a certificate of the path is on an uploaded CRL.
            DeviceIdUnavailable: the certificate lacks the value the device id comes from.
            IdentityTaken: the device id is provisioned with another certificate.
        """
        presented = self._presented(evidence)
        leaf = presented.leaf
        shown = [leaf, *presented.intermediates]
        refuse_denied(self._deny_list, shown)
        refuse_without_client_auth(leaf, required=True)
        match = self._match(presented, self._candidates(evidence), evidence.at)
        # Only the enrollment's CA certificates on the path are left to check.
        added = [c for c in match.chain if c not in shown]
        refuse_denied(self._deny_list, added, device_first=False)
        check_revocation(match.chain, self._crls, at=evidence.at)
        enrollment = match.enrollment
        device_id = device_id_from(leaf, enrollment.device_id_rule)
        fingerprint = certificate_fingerprint(leaf)
        # Checked on the locked device, where the use case reads it anyway.
        pinned = partial(_check_pin, device_id=device_id, fingerprint=fingerprint)
        nonce = None
        if presented.nonce is not None:
            assert presented.nonce_expires is not None
            nonce = Nonce(
                NONCE_SCOPE, presented.nonce, presented.nonce_expires,
                replayed="jws: this nonce was used before",
            )  # fmt: skip
        return Attestation(
            enrollment=enrollment,
            device_id=device_id,
            identity=f"x509:sha256:{fingerprint}",  # the IDevID's fingerprint
            pinned_fingerprint=fingerprint,
            claims={
                "manufacturer_subject": leaf.subject.rfc4514_string(),
                "manufacturer_issuer": leaf.issuer.rfc4514_string(),
                "manufacturer_serial": format(leaf.serial_number, "x"),
            },
            device_checks=(pinned,),
            nonce=nonce,
        )

    def _presented(self, evidence: Evidence) -> _Presented:
        """The device certificate: from a signed request if there is one, else from TLS."""
        token = evidence.fields.get("jws")
        if token is not None:
            verified = verify_compact(token)
            nonce, iat = check_claims(
                verified,
                csr=evidence.signing_request(),
                audience=self._audience,
                at=evidence.at,
                max_skew_seconds=self._max_skew,
            )
            expires = datetime.fromtimestamp(iat, UTC) + timedelta(seconds=self._nonce_lifetime)
            return _Presented(verified.leaf, verified.chain[1:], nonce, expires)
        if evidence.client_certificate is not None:
            return _Presented(evidence.client_certificate, evidence.client_intermediates)
        raise EvidenceMissing(
            "x509: present the manufacturer certificate in the TLS handshake, "
            "or send a signed request in evidence.jws"
        )

    def _candidates(self, evidence: Evidence) -> list[Enrollment]:
        if evidence.enrollment_id is not None:
            try:
                named = self._enrollments.get(evidence.enrollment_id)
            except NotFound:
                named = None
            if named is None or named.mechanism is not Mechanism.X509 or named.x509 is None:
                raise IdentityNotEnrolled(f"there is no x509 enrollment {evidence.enrollment_id!r}")
            return [named]  # a disabled one is refused by policy, with a clearer error
        return [
            e
            for e in self._enrollments.search(mechanism=Mechanism.X509, limit=MAX_ENROLLMENTS)
            if e.enabled and e.x509 is not None
        ]

    def _match(self, presented: _Presented, candidates: list[Enrollment], at: datetime) -> _Match:
        leaf = presented.leaf
        if at < leaf.not_valid_before_utc:
            raise CertificateExpired(
                f"the device certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}"
            )
        expired = at > leaf.not_valid_after_utc
        # An expired certificate is checked as of its last valid second: does it belong?
        when = leaf.not_valid_after_utc if expired else at
        matches: list[_Match] = []
        reasons: list[str] = []
        refused_as_expired = False
        for enrollment in candidates:
            assert enrollment.x509 is not None
            chain = _chain_of(enrollment.x509.certificate_chain)
            issuers = {c.subject for c in (*chain, *presented.intermediates)}
            if leaf.issuer not in issuers:
                continue
            try:
                path = self._path(leaf, chain, presented.intermediates, when)
            except VerificationError as exc:
                reasons.append(str(exc))
                continue
            depth = _identifying_depth(path, chain, enrollment.x509.lead_certificate_name)
            if depth is None:
                reasons.append("the path does not go through the lead certificate")
                continue
            if expired and not enrollment.x509.accept_expired:
                refused_as_expired = True
                continue
            lapsed = [
                c for c in path[1:] if not c.not_valid_before_utc <= at <= c.not_valid_after_utc
            ]
            if lapsed:
                subject = lapsed[0].subject.rfc4514_string()
                reasons.append(f"manufacturer CA {subject} is not valid now")
                continue
            matches.append(_Match(enrollment, path, depth))
        if not matches:
            if refused_as_expired:
                raise CertificateExpired(
                    "the device certificate expired on "
                    f"{leaf.not_valid_after_utc:%Y-%m-%d} and its enrollment does not accept "
                    "expired manufacturer certificates"
                )
            detail = f": {reasons[0]}" if len(reasons) == 1 and len(candidates) == 1 else ""
            raise IdentityNotEnrolled(
                "no x509 enrollment admits this device certificate "
                f"(issuer {leaf.issuer.rfc4514_string()}){detail}"
            )
        matches.sort(key=lambda m: m.depth)
        if len(matches) > 1 and matches[0].depth == matches[1].depth:
            raise EnrollmentAmbiguous(
                "several x509 enrollments admit this device certificate; "
                "name one with enrollment_id"
            )
        return matches[0]

    @staticmethod
    def _path(
        leaf: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        presented: tuple[x509.Certificate, ...],
        when: datetime,
    ) -> tuple[x509.Certificate, ...]:
        verifier = (
            PolicyBuilder()
            .store(Store([chain[-1]]))
            .time(when)
            .extension_policies(ca_policy=_IDEVID_CA, ee_policy=_IDEVID_EE)
            .build_client_verifier()
        )
        return tuple(verifier.verify(leaf, [*chain[:-1], *presented]).chain)


def _check_pin(device: Device | None, *, device_id: str, fingerprint: str) -> None:
    """A device id stays with the certificate it was first provisioned with.

    Raises:
        IdentityTaken: the device is pinned to another manufacturer certificate.
    """
    if device is None or device.status is DeviceStatus.RESET:
        return
    if device.pinned_fingerprint == fingerprint:
        return
    if device.pinned_fingerprint is None and device.mechanism == Mechanism.X509.value:
        return
    raise IdentityTaken(
        f"device {device_id!r} is provisioned with another identity; "
        "an administrator must reset it first"
    )


def _identifying_depth(
    path: tuple[x509.Certificate, ...],
    chain: tuple[x509.Certificate, ...],
    lead_name: str | None,
) -> int | None:
    """Where in ``path`` the enrollment's identifying certificate is, or None.

    The identifying certificate is the lead certificate when the enrollment names one,
    else the first certificate of the path that belongs to the enrollment's chain.
    """
    wanted = list(chain) if lead_name is None else [c for c in chain if lead_name in _names(c)]
    for depth, certificate in enumerate(path):
        if depth > 0 and certificate in wanted:
            return depth
    return None
