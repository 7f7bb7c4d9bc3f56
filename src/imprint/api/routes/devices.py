"""Admin device API: the fleet, each device's provisioning timeline, and its lifecycle.

A device is named in the path by imprint's reference (``id``) or by its own device id
(``?owner=`` when several organizations have a device of that id).

Scoped by organization (the device's owner): viewers read, operators approve, disable,
enable, revoke and reset; a foreign device answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.pki.authority import REVOCATION_REASONS
from imprint.provisioning.devices import Device, DeviceStatus, StepRecord

router = APIRouter(prefix="/api/v1", tags=["devices"])

#: A device is named by imprint's reference or by its own device id; ``owner`` picks
#: between devices of several organizations that share a device id.
OwnerQuery = Annotated[
    str | None, Query(max_length=100, description="With a device id: the device's owner")
]


class DeviceOut(BaseModel):
    id: str = Field(description="imprint's reference for the device")
    device_id: str
    owner: str
    enrollment_id: str
    mechanism: str
    status: DeviceStatus
    certificate_serial: str | None
    pinned_fingerprint: str | None
    created_at: datetime
    updated_at: datetime
    provisioned_at: datetime | None

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            id=device.id,
            device_id=device.device_id,
            owner=device.owner,
            enrollment_id=device.enrollment_id,
            mechanism=device.mechanism,
            status=device.status,
            certificate_serial=device.certificate_serial,
            pinned_fingerprint=device.pinned_fingerprint,
            created_at=device.created_at,
            updated_at=device.updated_at,
            provisioned_at=device.provisioned_at,
        )


class StepOut(BaseModel):
    request_id: str
    step: str
    status: str
    code: str | None
    detail: str | None
    at: datetime

    @classmethod
    def of(cls, record: StepRecord) -> StepOut:
        return cls(
            request_id=record.request_id,
            step=record.step.value,
            status=record.status,
            code=record.code,
            detail=record.detail,
            at=record.at,
        )


class DeviceDetail(DeviceOut):
    attributes: dict[str, str] = Field(
        description=(
            "What the organization's provisioning hook added to the device at its last "
            "registration (empty when it added none)"
        ),
    )
    timeline: list[StepOut]


class DevicePage(BaseModel):
    items: list[DeviceOut]
    total: int = Field(description="How many devices match, over all pages")
    next: str | None = Field(description="Pass as ?after= for the next page")


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="unspecified",
        max_length=32,
        description="An RFC 5280 reason; key-compromise and key_compromise are read too",
        json_schema_extra={"enum": list(REVOCATION_REASONS)},
    )
    disable: bool = Field(default=True, description="Also disable the device")


class EnrollmentRevocationOut(BaseModel):
    enrollment_id: str
    devices: int
    certificates_revoked: int


@router.get("/devices", summary="List devices")
def list_devices(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    status: DeviceStatus | None = None,
    enrollment_id: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None, Query(max_length=36, description="The previous page's next")
    ] = None,
) -> DevicePage:
    page = runtime.app.devices.page(
        principal, owner=owner, enrollment_id=enrollment_id, status=status, limit=limit, after=after
    )
    return DevicePage(items=[DeviceOut.of(d) for d in page.items], total=page.total, next=page.next)


@router.get("/devices/{device_ref}", summary="One device and its provisioning timeline")
def show_device(
    device_ref: str, runtime: RuntimeDep, principal: PrincipalDep, owner: OwnerQuery = None
) -> DeviceDetail:
    device, steps = runtime.app.devices.show(principal, device_ref, owner=owner)
    timeline = [StepOut.of(r) for r in steps]
    attributes = runtime.app.devices.attributes(principal, device.id)
    return DeviceDetail(
        **DeviceOut.of(device).model_dump(), attributes=dict(attributes), timeline=timeline
    )


@router.post("/devices/{device_ref}/approve", summary="Approve a pending device")
def approve_device(
    device_ref: str, runtime: RuntimeDep, principal: PrincipalDep, owner: OwnerQuery = None
) -> DeviceOut:
    return DeviceOut.of(runtime.app.devices.approve(principal, device_ref, owner=owner))


@router.post("/devices/{device_ref}/disable", summary="Refuse provisioning and renewal")
def disable_device(
    device_ref: str, runtime: RuntimeDep, principal: PrincipalDep, owner: OwnerQuery = None
) -> DeviceOut:
    return DeviceOut.of(runtime.app.devices.disable(principal, device_ref, owner=owner))


@router.post("/devices/{device_ref}/enable", summary="Allow a disabled device again")
def enable_device(
    device_ref: str, runtime: RuntimeDep, principal: PrincipalDep, owner: OwnerQuery = None
) -> DeviceOut:
    return DeviceOut.of(runtime.app.devices.enable(principal, device_ref, owner=owner))


@router.post("/devices/{device_ref}/revoke", summary="Revoke every certificate the device holds")
def revoke(
    device_ref: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: RevokeBody | None = None,
    owner: OwnerQuery = None,
) -> DeviceOut:
    body = body or RevokeBody()
    device = runtime.app.devices.revoke(
        principal, device_ref, body.reason, disable=body.disable, owner=owner
    )
    return DeviceOut.of(device)


@router.post("/devices/{device_ref}/reset", summary="Factory reset: release the device")
def reset(
    device_ref: str, runtime: RuntimeDep, principal: PrincipalDep, owner: OwnerQuery = None
) -> DeviceOut:
    return DeviceOut.of(runtime.app.devices.reset(principal, device_ref, owner=owner))


@router.post(
    "/enrollments/{enrollment_id}/revoke",
    summary="Disable an enrollment and revoke every certificate of its devices",
)
def revoke_all(
    enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep, body: RevokeBody | None = None
) -> EnrollmentRevocationOut:
    reason = (body or RevokeBody()).reason
    result = runtime.app.devices.revoke_enrollment(principal, enrollment_id, reason)
    return EnrollmentRevocationOut(
        enrollment_id=result.enrollment_id,
        devices=result.devices,
        certificates_revoked=result.certificates_revoked,
    )
