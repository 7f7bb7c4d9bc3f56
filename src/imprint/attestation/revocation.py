"""What imprint refuses even when a certificate chain verifies.

Two sources, both managed by an administrator:

- the **deny-list**: SHA-256 fingerprints of certificates (device certificates or CA
  certificates) that must never be accepted, each with a reason;
- **manufacturer CRLs**: imprint cannot fetch a manufacturer's CRL (no internet is
  assumed), so an administrator uploads it. An upload is accepted only when it is
  signed by a CA certificate imprint already knows (from an enrollment's chain); it
  is stored under the SHA-256 of that issuer's public key, newest wins.

A certificate whose serial is on the stored CRL of its issuer is revoked. A stored
CRL past its ``nextUpdate`` still counts (revocation is final) and is reported as
stale; an issuer without an uploaded CRL is not checked.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from imprint.attestation.base import CertificateDenied, CertificateRevoked
from imprint.errors import Conflict, InvalidValue
from imprint.logs import get_logger

__all__ = [
    "CrlInvalid",
    "CrlIssuerUnknown",
    "CrlOutdated",
    "CrlSignatureInvalid",
    "DeniedCertificate",
    "DenyList",
    "ManufacturerCrl",
    "ManufacturerCrlStore",
    "certificate_fingerprint",
    "check_revocation",
    "import_crl",
    "key_sha256",
    "normalize_fingerprint",
    "refuse_denied",
]

log = get_logger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")


class CrlInvalid(InvalidValue):
    code = "crl_invalid"


class CrlIssuerUnknown(InvalidValue):
    code = "crl_issuer_unknown"


class CrlSignatureInvalid(InvalidValue):
    code = "crl_signature_invalid"


class CrlOutdated(Conflict):
    code = "crl_outdated"


@dataclass(frozen=True, slots=True)
class DeniedCertificate:
    fingerprint_sha256: str
    reason: str
    created_at: datetime


class DenyList(Protocol):
    def add(self, entry: DeniedCertificate) -> None:
        """Raise Conflict when the fingerprint is listed already."""

    def remove(self, fingerprint_sha256: str) -> None:
        """Raise NotFound when it is not listed."""

    def first_of(self, fingerprints: Sequence[str]) -> DeniedCertificate | None:
        """The entry of the first listed fingerprint among ``fingerprints``."""

    def search(self, *, limit: int = 100, after: str | None = None) -> Sequence[DeniedCertificate]:
        """Entries ordered by fingerprint, starting after ``after``."""


@dataclass(frozen=True, slots=True)
class ManufacturerCrl:
    """A CRL uploaded for a manufacturer CA, identified by that CA's key."""

    issuer_key_sha256: str
    issuer: str
    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    revoked_count: int
    fingerprint_sha256: str
    der: bytes
    uploaded_at: datetime

    def is_stale(self, at: datetime) -> bool:
        return self.next_update is not None and self.next_update < at


class ManufacturerCrlStore(Protocol):
    def put(self, crl: ManufacturerCrl) -> None:
        """Insert, or replace the CRL of the same issuer key."""

    def get(self, issuer_key_sha256: str) -> ManufacturerCrl | None: ...

    def for_issuers(self, issuer_keys: Sequence[str]) -> Sequence[ManufacturerCrl]: ...

    def remove(self, issuer_key_sha256: str) -> None:
        """Raise NotFound when there is none."""

    def search(self, *, limit: int = 100) -> Sequence[ManufacturerCrl]: ...


# Both digests are asked of the same few manufacturer CA certificates at every x509
# registration (the deny-list, the CRLs of the path), and of its device certificate
# twice; the most recent answers are kept (a certificate hashes and compares by its
# content). bench/README.md, step 32.
_RECENT = 256


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, lowercase hex (``openssl x509 -fingerprint``)."""
    return _fingerprint(certificate)


def key_sha256(certificate: x509.Certificate) -> str:
    """SHA-256 over the certificate's SubjectPublicKeyInfo, lowercase hex."""
    return _key_digest(certificate)


@functools.lru_cache(maxsize=_RECENT)
def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@functools.lru_cache(maxsize=_RECENT)
def _key_digest(certificate: x509.Certificate) -> str:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:...`` or ``abcd...`` (64 hex digits); return lowercase hex.

    Raises:
        InvalidValue: not a SHA-256 fingerprint.
    """
    value = re.sub(r"[\s:]", "", text).lower()
    if not _HEX64.fullmatch(value):
        raise InvalidValue("fingerprint_sha256: 64 hex digits, colons allowed")
    return value


def refuse_denied(
    deny_list: DenyList, certificates: Sequence[x509.Certificate], *, device_first: bool = True
) -> None:
    """Raises CertificateDenied when any of ``certificates`` is on the deny-list.

    ``certificates`` starts with the device certificate unless ``device_first`` is False
    (then they are all CA certificates).
    """
    fingerprints = [certificate_fingerprint(c) for c in certificates]
    entry = deny_list.first_of(fingerprints)
    if entry is None:
        return
    which = fingerprints.index(entry.fingerprint_sha256)
    device = device_first and which == 0
    what = "the device certificate" if device else "a CA certificate in its chain"
    raise CertificateDenied(f"{what} is on imprint's deny-list")


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(text)
        if text[:1] == b"\x30":
            return x509.load_der_x509_crl(text)
        return x509.load_der_x509_crl(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise CrlInvalid("crl: not a CRL in PEM, DER or base64 DER") from None


def _check_scope(crl: x509.CertificateRevocationList) -> None:
    """Only complete CRLs: a delta or partitioned CRL would hide revocations."""
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise CrlInvalid("crl: delta CRLs are not accepted; upload the complete CRL")
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
        raise CrlInvalid("crl: indirect or partial CRLs are not accepted")


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _signed_by(
    crl: x509.CertificateRevocationList, issuers: Iterable[x509.Certificate]
) -> x509.Certificate:
    named = [c for c in issuers if c.subject == crl.issuer]
    if not named:
        raise CrlIssuerUnknown(
            f"crl: no enrollment's CA certificate is named {crl.issuer.rfc4514_string()!r}"
        )
    for candidate in named:
        key = candidate.public_key()
        try:
            if crl.is_signature_valid(key):  # type: ignore[arg-type]
                return candidate
        except TypeError:
            continue
    raise CrlSignatureInvalid("crl: the signature does not verify with the issuer's key")


def import_crl(
    store: ManufacturerCrlStore,
    data: bytes,
    issuers: Iterable[x509.Certificate],
    *,
    at: datetime,
) -> ManufacturerCrl:
    """Verify a manufacturer CRL against the known CA certificates and store it.

    Args:
        store: where CRLs are kept.
        data: the CRL in PEM, DER or base64 DER.
        issuers: CA certificates a CRL may come from (every enrollment's chain).
        at: the upload time.

    Raises:
        CrlInvalid: not a complete CRL.
        CrlIssuerUnknown: no known CA has the CRL's issuer name.
        CrlSignatureInvalid: a CA of that name exists, but did not sign it.
        CrlOutdated: the stored CRL of that issuer is newer.
    """
    crl = _parse_crl(data)
    _check_scope(crl)
    issuer = _signed_by(crl, issuers)
    der = crl.public_bytes(serialization.Encoding.DER)
    record = ManufacturerCrl(
        issuer_key_sha256=key_sha256(issuer),
        issuer=issuer.subject.rfc4514_string(),
        crl_number=_crl_number(crl),
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        revoked_count=len(crl),
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        der=der,
        uploaded_at=at,
    )
    current = store.get(record.issuer_key_sha256)
    if current is not None and _newer(current, record):
        raise CrlOutdated(
            "crl: the stored CRL of this issuer is newer "
            f"(thisUpdate {current.this_update.isoformat()})"
        )
    store.put(record)
    return record


def _newer(current: ManufacturerCrl, upload: ManufacturerCrl) -> bool:
    if current.crl_number is not None and upload.crl_number is not None:
        return current.crl_number > upload.crl_number
    return current.this_update > upload.this_update


@functools.lru_cache(maxsize=64)
def _load(der: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(der)


def _distribution_points(certificate: x509.Certificate) -> list[str]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(name.value)
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def check_revocation(
    chain: Sequence[x509.Certificate], store: ManufacturerCrlStore, *, at: datetime
) -> None:
    """Check every certificate of a verified chain (leaf first) against its issuer's CRL.

    Raises:
        CertificateRevoked: a certificate of the chain is on its issuer's stored CRL.
    """
    pairs = list(itertools.pairwise(chain))
    found = {
        crl.issuer_key_sha256: crl for crl in store.for_issuers([key_sha256(p) for _, p in pairs])
    }
    for index, (certificate, issuer) in enumerate(pairs):
        stored = found.get(key_sha256(issuer))
        if stored is None:
            points = _distribution_points(certificate)
            if points:
                log.warning(
                    "manufacturer_crl_missing",
                    issuer=issuer.subject.rfc4514_string(),
                    distribution_points=points,
                )
            continue
        if stored.is_stale(at):
            log.warning(
                "manufacturer_crl_stale",
                issuer=stored.issuer,
                next_update=stored.next_update.isoformat() if stored.next_update else None,
            )
        if _load(stored.der).get_revoked_certificate_by_serial_number(certificate.serial_number):
            what = "the device certificate" if index == 0 else "a manufacturer CA certificate"
            raise CertificateRevoked(f"{what} is on the manufacturer's CRL")
