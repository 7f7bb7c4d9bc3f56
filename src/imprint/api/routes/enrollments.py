"""Admin enrollment API: create, list, show, update, enable/disable, delete.

Scoped by organization (the enrollment's owner): viewers read, operators enable and
disable, admins create, update and delete; a foreign enrollment answers 404.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
)
from imprint.provisioning.specs import (
    ChannelSpec,
    EnrollmentPatch,
    EnrollmentSpec,
    HubView,
    X509Spec,
)

router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])


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
    x509: X509Spec | None
    has_group_key: bool
    reprovision: ReprovisionPolicy
    renewal_grace_days: int
    channel: ChannelSpec | None = None
    hub: HubView | None = Field(default=None, description="Hub provider (its secret is not shown)")
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
            else X509Spec(
                certificate_chain=list(x509.certificate_chain),
                lead_certificate_name=x509.lead_certificate_name,
                accept_expired=x509.accept_expired,
            ),
            has_group_key=enrollment.group_key is not None,
            reprovision=enrollment.reprovision,
            renewal_grace_days=enrollment.renewal_grace_days,
            channel=None
            if enrollment.channel is None
            else ChannelSpec(
                fields=dict(enrollment.channel.fields),
                name=enrollment.channel.name,
                delivery=enrollment.channel.delivery,
            ),
            hub=None if enrollment.hub is None else HubView.of(enrollment.hub),
            created_at=enrollment.created_at,
            updated_at=enrollment.updated_at,
        )


class CreatedEnrollment(EnrollmentOut):
    pre_shared_key: str | None = Field(description="Shown here once; stored sealed")
    group_key: str | None = Field(description="symmetric-key: base64, shown here once")


class UpdatedEnrollment(EnrollmentOut):
    changed: list[str] = Field(description="The fields whose value changed")
    pre_shared_key: str | None = Field(
        default=None, description="Only when the update generated one: shown here once"
    )


class EnrollmentPage(BaseModel):
    items: list[EnrollmentOut]
    total: int = Field(description="How many enrollments match, over all pages")
    next: str | None = Field(default=None, description="Pass as 'after' for the next page")


@router.post("", status_code=201, summary="Create an enrollment group or individual enrollment")
def create(body: EnrollmentSpec, runtime: RuntimeDep, principal: PrincipalDep) -> CreatedEnrollment:
    enrollment = runtime.app.enrollments.create(principal, body)
    group_key = enrollment.group_key
    return CreatedEnrollment(
        **EnrollmentOut.of(enrollment).model_dump(),
        pre_shared_key=enrollment.pre_shared_key,
        group_key=None if group_key is None else base64.b64encode(group_key).decode(),
    )


@router.get("", summary="List enrollments")
def list_enrollments(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    mechanism: Mechanism | None = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=100, description="A page's 'next'")] = None,
) -> EnrollmentPage:
    found = runtime.app.enrollments.page(
        principal, mechanism=mechanism, owner=owner, limit=limit, after=after
    )
    return EnrollmentPage(
        items=[EnrollmentOut.of(e) for e in found.items], total=found.total, next=found.next
    )


@router.get("/{enrollment_id}", summary="One enrollment (secrets are never shown again)")
def show(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> EnrollmentOut:
    return EnrollmentOut.of(runtime.app.enrollments.show(principal, enrollment_id))


@router.patch(
    "/{enrollment_id}",
    summary="Change an enrollment: only the fields given (null clears an optional one)",
    description="Id, kind, mechanism, owner, registration id, device-id rule, manufacturer "
    "chain, group key and hub provider cannot change: giving another value answers 409 "
    "`change_unsafe` with the reason. Devices already provisioned keep their certificates "
    "and channels.",
)
def update(
    enrollment_id: str,
    body: EnrollmentPatch,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    response: Response,
) -> UpdatedEnrollment:
    patched = runtime.app.enrollments.update(principal, enrollment_id, body)
    if patched.generated_pre_shared_key is not None:
        response.headers["Cache-Control"] = "no-store"
    return UpdatedEnrollment(
        **EnrollmentOut.of(patched.enrollment).model_dump(),
        changed=list(patched.changed),
        pre_shared_key=patched.generated_pre_shared_key,
    )


@router.post("/{enrollment_id}/disable", summary="Stop admitting devices")
def disable(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> EnrollmentOut:
    return EnrollmentOut.of(runtime.app.enrollments.disable(principal, enrollment_id))


@router.post("/{enrollment_id}/enable", summary="Admit devices again")
def enable(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> EnrollmentOut:
    return EnrollmentOut.of(runtime.app.enrollments.enable(principal, enrollment_id))


@router.delete("/{enrollment_id}", status_code=204, summary="Delete an enrollment")
def delete(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.enrollments.delete(principal, enrollment_id)
    return Response(status_code=204)
