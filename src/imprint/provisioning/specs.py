"""Enrollment specifications: what an administrator asks for, from the API or the CLI.

Both front ends validate the same model and turn it into an
:class:`~imprint.provisioning.enrollments.Enrollment` with :func:`enrollment_from`,
which also generates what was asked to be generated (id, pre-shared key, group key).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from imprint.errors import InvalidValue
from imprint.provisioning.channels import (
    DEVICE_ID_PLACEHOLDER,
    ChannelTemplate,
    KeyDelivery,
)
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
    X509Material,
    generate_pre_shared_key,
    new_enrollment_id,
    now,
)
from imprint.provisioning.hub import HubProvider

__all__ = [
    "ChannelSpec",
    "EnrollmentSpec",
    "HubSpec",
    "HubView",
    "X509Spec",
    "enrollment_from",
]

_DEFAULT_RULE = {
    Mechanism.X509: DeviceIdRule.COMMON_NAME,
    Mechanism.CLIENT_CA: DeviceIdRule.COMMON_NAME,
}


class X509Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate_chain: list[Annotated[str, Field(max_length=16384)]] = Field(
        max_length=10,
        description="Manufacturer chain in PEM: nearest intermediate first, root last",
    )
    lead_certificate_name: str | None = Field(default=None, max_length=200)
    accept_expired: bool = Field(
        default=False, description="Accept an expired manufacturer certificate (IDevID)"
    )


class ChannelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Annotated[str, Field(max_length=100)]] = Field(
        max_length=8, description='Labels of the fields in use, e.g. {"field1": "temperature"}'
    )
    name: str = Field(
        default=DEVICE_ID_PLACEHOLDER,
        max_length=100,
        description="Channel name; {device_id} is replaced by the device's id",
    )
    delivery: KeyDelivery = Field(
        default=KeyDelivery.SEALED,
        description="sealed: the write key is encrypted for devices that share a secret "
        "(registration-key); plain: in the clear inside TLS, and the midPoint route answers "
        "channel=/writeKey= lines as midPoint-era firmware expects",
    )


class HubProviderSpec(BaseModel):
    """The seed's ``hub.authorization.provider``; its camelCase keys are accepted too."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, description="A label, e.g. plgd.dps")
    client_id: str = Field(
        max_length=100, validation_alias=AliasChoices("client_id", "clientId", "clientID")
    )
    client_secret: SecretStr = Field(
        validation_alias=AliasChoices("client_secret", "clientSecret"),
        description="Sealed at rest, never shown back",
    )
    scopes: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=20)
    audience: str | None = Field(default=None, max_length=500)
    token_url: str | None = Field(
        default=None,
        max_length=500,
        validation_alias=AliasChoices("token_url", "tokenUrl", "tokenURL"),
        description="External token endpoint; absent: imprint's own OAuth server",
    )


class HubAuthorizationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: HubProviderSpec


class HubSpec(BaseModel):
    """Where the hub token in each bundle comes from (plgd's ``hub`` section)."""

    model_config = ConfigDict(extra="forbid")

    authorization: HubAuthorizationSpec


class HubProviderView(BaseModel):
    name: str
    client_id: str
    has_client_secret: bool
    scopes: list[str]
    audience: str | None
    token_url: str | None


class HubAuthorizationView(BaseModel):
    provider: HubProviderView


class HubView(BaseModel):
    """An enrollment's hub provider as shown: everything but the client secret."""

    authorization: HubAuthorizationView

    @classmethod
    def of(cls, provider: HubProvider) -> HubView:
        return cls(
            authorization=HubAuthorizationView(
                provider=HubProviderView(
                    name=provider.name,
                    client_id=provider.client_id,
                    has_client_secret=bool(provider.client_secret),
                    scopes=list(provider.scopes),
                    audience=provider.audience,
                    token_url=provider.token_url,
                )
            )
        )


class EnrollmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=63, description="Default: generated")
    kind: EnrollmentKind = EnrollmentKind.GROUP
    mechanism: Mechanism
    owner: str = Field(max_length=100, description="Owner organization id")
    profile: str = Field(default="device", max_length=32)
    validity_days: int | None = None
    key_types: list[str] = Field(default_factory=lambda: ["ec-p256", "ec-p384"], max_length=10)
    device_id_rule: DeviceIdRule | None = Field(
        default=None,
        description="Default: common-name for x509 and client-ca, else registration-id",
    )
    device_id_pattern: str | None = Field(default=None, max_length=500)
    registration_id: str | None = Field(default=None, max_length=200)
    manual_approval: bool = False
    pre_shared_key: str | None = Field(default=None, max_length=200)
    generate_pre_shared_key: bool = False
    services: dict[str, str] = Field(default_factory=dict, max_length=50)
    enabled: bool = True
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    quota: int | None = None
    renewal_grace_days: int = Field(
        default=0, description="Days after expiry in which a signed renewal is still accepted"
    )
    reprovision: ReprovisionPolicy = Field(
        default=ReprovisionPolicy.ALLOW,
        description="allow: a provisioned device may provision again (old certificate "
        "superseded); reset-required: only after a factory reset",
    )
    x509: X509Spec | None = None
    group_key: str | None = Field(
        default=None, max_length=200, description="symmetric-key: base64, default generated"
    )
    channel: ChannelSpec | None = Field(
        default=None, description="Give every device a data channel (the ThingSpeak model)"
    )
    hub: HubSpec | None = Field(
        default=None, description="Put a hub (OAuth) token acting for the owner in each bundle"
    )


def _group_key(body: EnrollmentSpec) -> bytes | None:
    if body.mechanism is not Mechanism.SYMMETRIC_KEY:
        if body.group_key is not None:
            raise InvalidValue(f"group_key: not used by the {body.mechanism.value} mechanism")
        return None
    if body.group_key is None:
        return secrets.token_bytes(32)
    try:
        return base64.b64decode(body.group_key, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue("group_key: not base64") from None


def enrollment_from(body: EnrollmentSpec, *, at: datetime | None = None) -> Enrollment:
    """Turn the request into an enrollment, generating what was asked to be generated.

    ``at`` is when it is made (the runtime clock's time; the system's when omitted).
    """
    if body.pre_shared_key is not None and body.generate_pre_shared_key:
        raise InvalidValue("pre_shared_key: give one, or ask for one to be generated, not both")
    psk = generate_pre_shared_key() if body.generate_pre_shared_key else body.pre_shared_key
    stamp = now() if at is None else at.replace(microsecond=0)
    return Enrollment(
        id=body.id or new_enrollment_id(),
        kind=body.kind,
        mechanism=body.mechanism,
        owner=body.owner,
        created_at=stamp,
        updated_at=stamp,
        profile=body.profile,
        validity_days=body.validity_days,
        key_types=tuple(body.key_types),
        device_id_rule=body.device_id_rule
        or _DEFAULT_RULE.get(body.mechanism, DeviceIdRule.REGISTRATION_ID),
        device_id_pattern=body.device_id_pattern,
        registration_id=body.registration_id,
        manual_approval=body.manual_approval,
        pre_shared_key=psk,
        services=body.services,
        enabled=body.enabled,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        quota=body.quota,
        x509=None
        if body.x509 is None
        else X509Material(
            certificate_chain=tuple(body.x509.certificate_chain),
            lead_certificate_name=body.x509.lead_certificate_name,
            accept_expired=body.x509.accept_expired,
        ),
        group_key=_group_key(body),
        reprovision=body.reprovision,
        renewal_grace_days=body.renewal_grace_days,
        channel=None
        if body.channel is None
        else ChannelTemplate(
            fields=dict(body.channel.fields),
            name=body.channel.name,
            delivery=body.channel.delivery,
        ),
        hub=None if body.hub is None else _hub_provider(body.hub),
    )


def _hub_provider(hub: HubSpec) -> HubProvider:
    provider = hub.authorization.provider
    return HubProvider(
        name=provider.name,
        client_id=provider.client_id,
        client_secret=provider.client_secret.get_secret_value(),
        scopes=tuple(provider.scopes),
        audience=provider.audience,
        token_url=provider.token_url,
    )
