"""Trusted client CAs for self-provisioning (the connectivity-platform story).

An administrator pastes one or more CA certificates in PEM; :func:`decode` shows what
each one is before anything is saved. A client-ca enrollment then admits, on first
contact over mutual TLS, any device whose certificate one of its CAs signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.attestation.peer_chain import issued_by
from imprint.errors import InvalidValue
from imprint.pki.keys import key_description

__all__ = ["ClientCA", "ClientCAStore", "DecodedCertificate", "decode", "parse_pem_bundle"]

MAX_CERTIFICATES = 50


@dataclass(frozen=True, slots=True)
class DecodedCertificate:
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    key: str
    fingerprint_sha256: str
    is_ca: bool
    self_signed: bool
    pem: str
    trusted_as: str = "root"
    chain: tuple[str, ...] = ()
    devices_send: str = ""


@dataclass(frozen=True, slots=True)
class ClientCA:
    id: str
    enrollment_id: str
    fingerprint_sha256: str
    subject: str
    pem: str
    created_at: datetime

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.encode("ascii"))


class ClientCAStore(Protocol):
    def add(self, cas: Sequence[ClientCA]) -> int:
        """Store new CAs (a fingerprint already trusted by the enrollment is skipped)."""

    def for_enrollment(self, enrollment_id: str) -> Sequence[ClientCA]: ...
    def all(self) -> Sequence[ClientCA]: ...
    def remove(self, enrollment_id: str, fingerprint: str) -> None: ...


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def parse_pem_bundle(text: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text.

    Raises:
        InvalidValue: no certificate, an unparseable one, or too many.
    """
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("utf-8", "replace"))
    except ValueError:
        raise InvalidValue("not PEM certificates (-----BEGIN CERTIFICATE----- blocks)") from None
    if len(certificates) > MAX_CERTIFICATES:
        raise InvalidValue(f"at most {MAX_CERTIFICATES} certificates at once")
    return certificates


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _chain_above(
    certificate: x509.Certificate, bundle: Sequence[x509.Certificate]
) -> tuple[str, ...]:
    """The subjects from ``certificate`` up through the bundle, as far as it links."""
    chain = [certificate]
    current = certificate
    while current.subject != current.issuer and len(chain) <= len(bundle):
        above = next((c for c in bundle if c not in chain and issued_by(current, c)), None)
        if above is None:
            break
        chain.append(above)
        current = above
    return tuple(c.subject.rfc4514_string() for c in chain)


def _devices_send(certificate: x509.Certificate) -> str:
    if certificate.subject == certificate.issuer:
        return (
            "trusted as a root: a device sends its certificate with every intermediate CA "
            "between it and this root (unless that intermediate is trusted itself)"
        )
    return (
        "trusted as an intermediate: a device it issued sends its certificate alone; "
        "the path ends here, the CAs above it are not consulted"
    )


def decode(text: str) -> list[DecodedCertificate]:
    """What an administrator sees before saving: one entry per certificate, with how it
    would be trusted (``trusted_as``: root or intermediate), the chain it heads as far as
    the PEM shows it (``chain``: its subject first), and what devices must send."""
    bundle = parse_pem_bundle(text)
    return [
        DecodedCertificate(
            subject=c.subject.rfc4514_string(),
            issuer=c.issuer.rfc4514_string(),
            not_before=c.not_valid_before_utc,
            not_after=c.not_valid_after_utc,
            key=key_description(c.public_key()),
            fingerprint_sha256=fingerprint(c),
            is_ca=_is_ca(c),
            self_signed=c.subject == c.issuer,
            pem=c.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            trusted_as="root" if c.subject == c.issuer else "intermediate",
            chain=_chain_above(c, bundle),
            devices_send=_devices_send(c),
        )
        for c in bundle
    ]
