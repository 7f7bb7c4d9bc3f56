"""Certificate profiles: every extension of an issued certificate comes from here.

A profile is a template. The caller supplies the subject's names and a public key;
the profile decides key usage, extended key usage, basic constraints, key
identifiers, where the CRL and the issuer certificate are published, and how long the
certificate may live. Nothing is copied from a CSR.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from imprint.errors import InvalidValue, UnknownProfile
from imprint.pki.csr import IssuablePublicKey
from imprint.settings import ProfileSettings

__all__ = [
    "OCSP_RESPONDER_PROFILE",
    "PROFILE_NAMES",
    "CertificateProfile",
    "Publication",
    "parse_sans",
    "profile_named",
    "subject_name",
]

PROFILE_NAMES = ("device", "client", "server")


#: The delegated OCSP responder's profile: imprint issues it to itself, never to a device.
OCSP_RESPONDER_PROFILE = "ocsp-responder"


@dataclass(frozen=True, slots=True)
class Publication:
    """Where relying parties find the issuer's CRL, its certificate and the OCSP responder."""

    crl_url: str
    issuer_url: str
    ocsp_url: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateProfile:
    name: str
    extended_key_usages: tuple[x509.ObjectIdentifier, ...]
    validity: timedelta
    requires_san: bool
    ocsp_signing: bool = False  # the delegated OCSP responder (RFC 6960 4.2.2.2)

    def extensions(
        self,
        *,
        public_key: IssuablePublicKey,
        issuer: x509.Certificate,
        sans: Sequence[x509.GeneralName],
        has_subject: bool,
        publication: Publication,
    ) -> list[tuple[x509.ExtensionType, bool]]:
        """The extensions, with their criticality, in the order they are written."""
        if self.requires_san and not sans:
            raise InvalidValue(f"the {self.name} profile needs at least one DNS name or IP address")
        before, after = _fixed_extensions(
            self, isinstance(public_key, rsa.RSAPublicKey), issuer, publication
        )
        result = [*before, (x509.SubjectKeyIdentifier.from_public_key(public_key), False), *after]
        if sans:
            # RFC 5280 4.2.1.6: with an empty subject the SAN extension is critical.
            result.append((x509.SubjectAlternativeName(list(sans)), not has_subject))
        return result


Extensions = tuple[tuple[x509.ExtensionType, bool], ...]


@lru_cache(maxsize=64)
def _fixed_extensions(
    profile: CertificateProfile, is_rsa: bool, issuer: x509.Certificate, publication: Publication
) -> tuple[Extensions, Extensions]:
    """The extensions that do not depend on the subject: those written before its key
    identifier, and after it. The same few objects for every certificate a profile
    issues under one CA (built anew each time they were 15 % of a certificate's
    preparation: bench/README.md, step 40); all are immutable."""
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    access = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(publication.issuer_url),
        )
    ]
    if publication.ocsp_url is not None and not profile.ocsp_signing:
        # The responder's own certificate carries id-pkix-ocsp-nocheck instead.
        access.insert(
            0,
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(publication.ocsp_url),
            ),
        )
    before: Extensions = (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage, True),
        (x509.ExtendedKeyUsage(list(profile.extended_key_usages)), False),
    )
    after: Extensions = (
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), False),
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(publication.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            False,
        ),
        (x509.AuthorityInformationAccess(access), False),
    )
    if profile.ocsp_signing:
        after += ((x509.OCSPNoCheck(), False),)
    return before, after


def profile_named(name: str, settings: ProfileSettings) -> CertificateProfile:
    """The profile called ``name`` with the configured validity.

    Raises:
        UnknownProfile: no such profile.
    """
    if name == "device":
        return CertificateProfile(
            name="device",
            extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            validity=timedelta(days=settings.device_validity_days),
            requires_san=False,
        )
    if name == "client":
        return CertificateProfile(
            name="client",
            extended_key_usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            validity=timedelta(days=settings.client_validity_days),
            requires_san=False,
        )
    if name == "server":
        return CertificateProfile(
            name="server",
            extended_key_usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
            validity=timedelta(days=settings.server_validity_days),
            requires_san=True,
        )
    if name == OCSP_RESPONDER_PROFILE:
        return CertificateProfile(
            name=OCSP_RESPONDER_PROFILE,
            extended_key_usages=(ExtendedKeyUsageOID.OCSP_SIGNING,),
            validity=timedelta(days=7),
            requires_san=False,
            ocsp_signing=True,
        )
    raise UnknownProfile(f"unknown profile {name!r}; known: {', '.join(PROFILE_NAMES)}")


def subject_name(
    common_name: str | None, organization: str | None = None, organizational_unit: str | None = None
) -> x509.Name:
    """Build a subject; each attribute must be 1..64 characters (RFC 5280 upper bounds).

    Raises:
        InvalidValue: an attribute is empty, too long, or has control characters.
    """
    attributes = []
    for oid, label, value in (
        (NameOID.ORGANIZATION_NAME, "organization", organization),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "organizational unit", organizational_unit),
        (NameOID.COMMON_NAME, "common name", common_name),
    ):
        if value is None:
            continue
        if not 1 <= len(value) <= 64 or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise InvalidValue(f"{label} must be 1 to 64 printable characters")
        attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)


def parse_sans(values: Sequence[str]) -> list[x509.GeneralName]:
    """Turn ``example.com``, ``192.0.2.1``, ``urn:...`` or ``https://...`` into SAN entries.

    Raises:
        InvalidValue: a value that is none of these.
    """
    result: list[x509.GeneralName] = []
    for value in values:
        value = value.strip()
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(value)))
            continue
        except ValueError:
            pass
        if ":" in value:
            result.append(x509.UniformResourceIdentifier(value))
            continue
        labels = value.rstrip(".").split(".")
        if (
            not value
            or not all(
                label and len(label) <= 63 and all(ch.isalnum() or ch in "-*" for ch in label)
                for label in labels
            )
            or not value.isascii()
        ):
            raise InvalidValue(f"{value!r} is not a DNS name, IP address or URI")
        result.append(x509.DNSName(value.rstrip(".").lower()))
    return result
