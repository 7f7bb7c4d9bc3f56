"""Enrollments: who may provision, how they prove it, and what they get.

An enrollment *group* admits many devices that share attestation material (a
manufacturer CA chain, a group key); an *individual* enrollment admits one device,
named by its registration id. Every enrollment belongs to an owner organization and
carries the policy applied at provisioning: certificate profile and validity, key
types, how the device id is derived, manual approval, a pre-shared key, services,
an enabled window and a quota.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from imprint.errors import InvalidValue
from imprint.pki.profiles import PROFILE_NAMES
from imprint.provisioning.channels import ChannelTemplate, validate_template
from imprint.provisioning.hub import HubProvider, validate_hub_provider

__all__ = [
    "DeviceIdRule",
    "Enrollment",
    "EnrollmentKind",
    "EnrollmentStore",
    "Mechanism",
    "ReprovisionPolicy",
    "X509Material",
    "create_enrollment",
    "generate_pre_shared_key",
    "new_enrollment_id",
    "set_enabled",
    "validate_enrollment",
]

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SERVICE = re.compile(r"[a-z][a-z0-9-]{0,31}")
MIN_PSK_LENGTH = 16


class EnrollmentKind(StrEnum):
    GROUP = "group"
    INDIVIDUAL = "individual"


class Mechanism(StrEnum):
    X509 = "x509"
    CLIENT_CA = "client-ca"
    OOB_SECRET = "oob-secret"  # noqa: S105 (a mechanism name, not a secret)
    REGISTRATION_KEY = "registration-key"
    SYMMETRIC_KEY = "symmetric-key"
    RENEWAL = "renewal"  # a device renewing its own certificate; not for enrollments


class ReprovisionPolicy(StrEnum):
    """What a device that is already provisioned may do when it provisions again."""

    ALLOW = "allow"  # a new certificate; the old one is revoked as superseded
    RESET_REQUIRED = "reset-required"  # only after a factory reset (same-key retries still work)


class DeviceIdRule(StrEnum):
    """Where the device id comes from: always the attested identity, never a free choice."""

    COMMON_NAME = "common-name"
    SERIAL_NUMBER = "serial-number"
    REGISTRATION_ID = "registration-id"


@dataclass(frozen=True, slots=True)
class X509Material:
    """Manufacturer chain for x509 attestation: nearest intermediate first, root last."""

    certificate_chain: tuple[str, ...]
    lead_certificate_name: str | None = None
    accept_expired: bool = False

    def certificates(self) -> list[x509.Certificate]:
        return [
            x509.load_pem_x509_certificate(pem.encode("ascii")) for pem in self.certificate_chain
        ]


@dataclass(frozen=True, slots=True)
class Enrollment:
    id: str
    kind: EnrollmentKind
    mechanism: Mechanism
    owner: str
    created_at: datetime
    updated_at: datetime
    profile: str = "device"
    validity_days: int | None = None
    key_types: tuple[str, ...] = ("ec-p256", "ec-p384")
    device_id_rule: DeviceIdRule = DeviceIdRule.REGISTRATION_ID
    device_id_pattern: str | None = None
    registration_id: str | None = None
    manual_approval: bool = False
    pre_shared_key: str | None = None
    services: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    quota: int | None = None
    x509: X509Material | None = None
    group_key: bytes | None = None
    reprovision: ReprovisionPolicy = ReprovisionPolicy.ALLOW
    renewal_grace_days: int = 0
    channel: ChannelTemplate | None = None  # a data channel per device, made at provisioning
    hub: HubProvider | None = None  # where the hub token in the bundle comes from

    def is_open(self, at: datetime) -> bool:
        """Enabled and inside its window."""
        if not self.enabled:
            return False
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until


class EnrollmentStore(Protocol):
    def add(self, enrollment: Enrollment) -> None: ...
    def get(self, enrollment_id: str) -> Enrollment: ...
    def replace(self, enrollment: Enrollment) -> None: ...
    def remove(self, enrollment_id: str) -> None: ...
    def naming(self, mechanism: Mechanism, registration_id: str) -> Sequence[Enrollment]: ...
    def search(
        self,
        *,
        mechanism: Mechanism | None = None,
        owner: str | None = None,
        kind: EnrollmentKind | None = None,
        enabled: bool | None = None,
        limit: int = 100,
        owners: Collection[str] | None = None,
    ) -> Sequence[Enrollment]: ...


def generate_pre_shared_key() -> str:
    """A 32-character pre-shared key (24 random bytes, URL-safe base64)."""
    return secrets.token_urlsafe(24)


def _check_chain(material: X509Material) -> None:
    if not material.certificate_chain:
        raise InvalidValue("x509.certificate_chain needs at least the manufacturer root")
    try:
        chain = material.certificates()
    except ValueError:
        raise InvalidValue(
            "x509.certificate_chain holds something that is not a PEM certificate"
        ) from None
    root = chain[-1]
    if root.subject != root.issuer:
        raise InvalidValue("x509.certificate_chain must end with a self-signed root")
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidValue(
                "x509.certificate_chain is out of order: each certificate must be issued "
                "by the next one (nearest intermediate first, root last)"
            ) from None
    if material.lead_certificate_name is not None:
        names = {c.subject.rfc4514_string() for c in chain} | {
            str(a.value) for c in chain for a in c.subject
        }
        if material.lead_certificate_name not in names:
            raise InvalidValue("x509.lead_certificate_name names no certificate of the chain")


def validate_enrollment(enrollment: Enrollment) -> None:
    """Check an enrollment before it is stored.

    Raises:
        InvalidValue: naming the offending field.
    """
    if not _ID.fullmatch(enrollment.id):
        raise InvalidValue("id: 1 to 63 of a-z 0-9 . _ - starting with a letter or digit")
    if not enrollment.owner or len(enrollment.owner) > 100:
        raise InvalidValue("owner: an organization id of 1 to 100 characters")
    if enrollment.profile not in PROFILE_NAMES:
        raise InvalidValue(f"profile: one of {', '.join(PROFILE_NAMES)}")
    if enrollment.validity_days is not None and not 1 <= enrollment.validity_days <= 3650:
        raise InvalidValue("validity_days: 1 to 3650")
    unknown = set(enrollment.key_types) - set(KEY_TYPES)
    if not enrollment.key_types or unknown:
        raise InvalidValue(f"key_types: a non-empty subset of {', '.join(KEY_TYPES)}")
    if enrollment.device_id_pattern is not None:
        try:
            re.compile(enrollment.device_id_pattern)
        except re.error:
            raise InvalidValue("device_id_pattern: not a valid regular expression") from None
    if enrollment.kind is EnrollmentKind.INDIVIDUAL and not enrollment.registration_id:
        raise InvalidValue("registration_id: an individual enrollment names its device")
    if enrollment.kind is EnrollmentKind.GROUP and enrollment.registration_id:
        raise InvalidValue("registration_id: only individual enrollments name a device")
    if enrollment.pre_shared_key is not None and len(enrollment.pre_shared_key) < MIN_PSK_LENGTH:
        raise InvalidValue(f"pre_shared_key: at least {MIN_PSK_LENGTH} characters")
    for name, address in enrollment.services.items():
        if not _SERVICE.fullmatch(name) or not address or len(address) > 500:
            raise InvalidValue(f"services.{name}: a lowercase name and an address")
    if enrollment.mechanism is Mechanism.RENEWAL:
        raise InvalidValue("mechanism: renewal is how devices renew, not an enrollment mechanism")
    if not 0 <= enrollment.renewal_grace_days <= 365:
        raise InvalidValue("renewal_grace_days: 0 to 365")
    if enrollment.quota is not None and enrollment.quota < 1:
        raise InvalidValue("quota: at least 1, or none for no limit")
    if (
        enrollment.valid_from is not None
        and enrollment.valid_until is not None
        and enrollment.valid_from >= enrollment.valid_until
    ):
        raise InvalidValue("valid_until: must be after valid_from")
    if enrollment.mechanism is Mechanism.X509:
        if enrollment.x509 is None:
            raise InvalidValue("x509: the manufacturer certificate chain is required")
        _check_chain(enrollment.x509)
    elif enrollment.x509 is not None:
        raise InvalidValue(f"x509: not used by the {enrollment.mechanism.value} mechanism")
    if enrollment.mechanism is Mechanism.SYMMETRIC_KEY:
        if enrollment.group_key is None or len(enrollment.group_key) < 32:
            raise InvalidValue("group_key: at least 32 bytes")
    elif enrollment.group_key is not None:
        raise InvalidValue(f"group_key: not used by the {enrollment.mechanism.value} mechanism")
    if enrollment.channel is not None:
        validate_template(enrollment.channel)
    if enrollment.hub is not None:
        validate_hub_provider(enrollment.hub)


def now() -> datetime:
    """The system's time to the second, for what runs without a runtime clock (the
    configuration import); operations stamp with the runtime's clock."""
    return datetime.now(UTC).replace(microsecond=0)


def new_enrollment_id() -> str:
    return f"enr-{secrets.token_hex(6)}"


def create_enrollment(store: EnrollmentStore, enrollment: Enrollment) -> Enrollment:
    """Validate and store a new enrollment.

    Raises:
        InvalidValue: a field is not acceptable.
        Conflict: the id is taken.
    """
    validate_enrollment(enrollment)
    store.add(enrollment)
    return enrollment


def set_enabled(
    store: EnrollmentStore, enrollment_id: str, enabled: bool, *, at: datetime
) -> Enrollment:
    """Enable or disable an enrollment; a disabled one admits no device."""
    current = store.get(enrollment_id)
    changed = replace(current, enabled=enabled, updated_at=at.replace(microsecond=0))
    store.replace(changed)
    return changed
