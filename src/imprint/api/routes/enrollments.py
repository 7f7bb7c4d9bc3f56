"""Admin enrollment API: create, list, show, enable/disable, delete."""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import AdminKey, RuntimeDep
from imprint.errors import InvalidValue
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    X509Material,
    create_enrollment,
    generate_pre_shared_key,
    new_enrollment_id,
    now,
    set_enabled,
)

router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])

_DEFAULT_RULE = {
    Mechanism.X509: DeviceIdRule.COMMON_NAME,
    Mechanism.CLIENT_CA: DeviceIdRule.COMMON_NAME,
}


class X509In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate_chain: list[Annotated[str, Field(max_length=16384)]] = Field(
        max_length=10,
        description="Manufacturer chain in PEM: nearest intermediate first, root last",
    )
    lead_certificate_name: str | None = Field(default=None, max_length=200)
    accept_expired: bool = Field(
        default=False, description="Accept an expired manufacturer certificate (IDevID)"
    )


class EnrollmentIn(BaseModel):
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
    x509: X509In | None = None
    group_key: str | None = Field(
        default=None, max_length=200, description="symmetric-key: base64, default generated"
    )


class EnrollmentOut(BaseModel):
    id: str
    kind: EnrollmentKind
    mechanism: Mechanism
    owner: str
    profile: str
    validity_days: int | None
    key_types: list[str]
    device_id_rule: DeviceIdRule
    device_id_pattern: str | None
    registration_id: str | None
    manual_approval: bool
    has_pre_shared_key: bool
    services: dict[str, str]
    enabled: bool
    valid_from: datetime | None
    valid_until: datetime | None
    quota: int | None
    x509: X509In | None
    has_group_key: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, enrollment: Enrollment) -> EnrollmentOut:
        x509 = enrollment.x509
        return cls(
            id=enrollment.id,
            kind=enrollment.kind,
            mechanism=enrollment.mechanism,
            owner=enrollment.owner,
            profile=enrollment.profile,
            validity_days=enrollment.validity_days,
            key_types=list(enrollment.key_types),
            device_id_rule=enrollment.device_id_rule,
            device_id_pattern=enrollment.device_id_pattern,
            registration_id=enrollment.registration_id,
            manual_approval=enrollment.manual_approval,
            has_pre_shared_key=enrollment.pre_shared_key is not None,
            services=dict(enrollment.services),
            enabled=enrollment.enabled,
            valid_from=enrollment.valid_from,
            valid_until=enrollment.valid_until,
            quota=enrollment.quota,
            x509=None
            if x509 is None
            else X509In(
                certificate_chain=list(x509.certificate_chain),
                lead_certificate_name=x509.lead_certificate_name,
                accept_expired=x509.accept_expired,
            ),
            has_group_key=enrollment.group_key is not None,
            created_at=enrollment.created_at,
            updated_at=enrollment.updated_at,
        )


class CreatedEnrollment(EnrollmentOut):
    pre_shared_key: str | None = Field(description="Shown here once; stored sealed")
    group_key: str | None = Field(description="symmetric-key: base64, shown here once")


class EnrollmentPage(BaseModel):
    items: list[EnrollmentOut]


def _group_key(body: EnrollmentIn) -> bytes | None:
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


def enrollment_from(body: EnrollmentIn) -> Enrollment:
    """Turn the request into an enrollment, generating what was asked to be generated."""
    if body.pre_shared_key is not None and body.generate_pre_shared_key:
        raise InvalidValue("pre_shared_key: give one, or ask for one to be generated, not both")
    psk = generate_pre_shared_key() if body.generate_pre_shared_key else body.pre_shared_key
    stamp = now()
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
    )


@router.post("", status_code=201, summary="Create an enrollment group or individual enrollment")
def create(body: EnrollmentIn, runtime: RuntimeDep, _key: AdminKey) -> CreatedEnrollment:
    enrollment = create_enrollment(runtime.enrollments, enrollment_from(body))
    group_key = enrollment.group_key
    return CreatedEnrollment(
        **EnrollmentOut.of(enrollment).model_dump(),
        pre_shared_key=enrollment.pre_shared_key,
        group_key=None if group_key is None else base64.b64encode(group_key).decode(),
    )


@router.get("", summary="List enrollments")
def list_enrollments(
    runtime: RuntimeDep,
    _key: AdminKey,
    mechanism: Mechanism | None = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EnrollmentPage:
    found = runtime.enrollments.search(mechanism=mechanism, owner=owner, limit=limit)
    return EnrollmentPage(items=[EnrollmentOut.of(e) for e in found])


@router.get("/{enrollment_id}", summary="One enrollment (secrets are never shown again)")
def show(enrollment_id: str, runtime: RuntimeDep, _key: AdminKey) -> EnrollmentOut:
    return EnrollmentOut.of(runtime.enrollments.get(enrollment_id))


@router.post("/{enrollment_id}/disable", summary="Stop admitting devices")
def disable(enrollment_id: str, runtime: RuntimeDep, _key: AdminKey) -> EnrollmentOut:
    return EnrollmentOut.of(set_enabled(runtime.enrollments, enrollment_id, enabled=False))


@router.post("/{enrollment_id}/enable", summary="Admit devices again")
def enable(enrollment_id: str, runtime: RuntimeDep, _key: AdminKey) -> EnrollmentOut:
    return EnrollmentOut.of(set_enabled(runtime.enrollments, enrollment_id, enabled=True))


@router.delete("/{enrollment_id}", status_code=204, summary="Delete an enrollment")
def delete(enrollment_id: str, runtime: RuntimeDep, _key: AdminKey) -> Response:
    runtime.enrollments.remove(enrollment_id)
    return Response(status_code=204)
