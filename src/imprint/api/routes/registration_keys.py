"""Admin API for an enrollment's registration key: create or rotate, and show.

Scoped by the enrollment's organization: admins create and rotate keys, viewers see
the first halves; a foreign enrollment answers 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.app.scoping import visible_enrollment
from imprint.durations import parse_duration
from imprint.provisioning.registration_keys import (
    DEFAULT_HALF_LENGTH,
    DEFAULT_TRANSITION,
    KeyState,
    RegistrationKey,
    rotate_registration_key,
)
from imprint.runtime import Runtime
from imprint.store.registration_keys import SqlRegistrationKeyStore
from imprint.tenancy.roles import Role

router = APIRouter(prefix="/api/v1/enrollments", tags=["enrollments"])


class RegistrationKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transition: str | None = Field(
        default=None,
        max_length=20,
        description="How long the replaced key keeps working, e.g. 7d (default), 12h, 0s",
    )
    key: str | None = Field(
        default=None,
        max_length=65,
        description="Install this key (e.g. one moved from midPoint) instead of generating one",
    )
    half_length: int = Field(
        default=DEFAULT_HALF_LENGTH, ge=8, le=32, description="Length of each generated half"
    )


class RegistrationKeyOut(BaseModel):
    id: str
    first_half: str = Field(description="What devices send; the second half is never shown")
    state: KeyState
    active: bool = Field(description="False once a previous key's transition has ended")
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, key: RegistrationKey, at: datetime) -> RegistrationKeyOut:
        return cls(
            id=key.id,
            first_half=key.first_half,
            state=key.state,
            active=key.is_active(at),
            created_at=key.created_at,
            expires_at=key.expires_at,
        )


class RegistrationKeys(BaseModel):
    enrollment_id: str
    keys: list[RegistrationKeyOut]


class IssuedRegistrationKey(BaseModel):
    enrollment_id: str
    key: str = Field(description="The whole key, shown here once; type it into the devices")
    current: RegistrationKeyOut
    previous: RegistrationKeyOut | None


def _store(runtime: Runtime) -> SqlRegistrationKeyStore:
    return SqlRegistrationKeyStore(runtime.engine, runtime.box)


@router.post(
    "/{enrollment_id}/registration-key",
    status_code=201,
    summary="Create the registration key, or rotate it (the old one works for a transition)",
)
def issue(
    enrollment_id: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    response: Response,
    body: Annotated[RegistrationKeyIn | None, Body()] = None,
) -> IssuedRegistrationKey:
    enrollment = visible_enrollment(runtime, principal, enrollment_id, Role.ADMIN)
    response.headers["Cache-Control"] = "no-store"
    body = body or RegistrationKeyIn()
    at = datetime.now(UTC)
    transition = DEFAULT_TRANSITION if body.transition is None else parse_duration(body.transition)
    rotation = rotate_registration_key(
        _store(runtime),
        runtime.enrollments,
        enrollment_id,
        at=at,
        transition=transition,
        key=body.key,
        half_length=body.half_length,
    )
    audit(
        runtime,
        principal,
        "registration_key.rotate",
        "enrollment",
        enrollment_id,
        org_id=enrollment.owner,
    )
    return IssuedRegistrationKey(
        enrollment_id=enrollment_id,
        key=rotation.current.key,
        current=RegistrationKeyOut.of(rotation.current, at),
        previous=None
        if rotation.previous is None
        else RegistrationKeyOut.of(rotation.previous, at),
    )


@router.get(
    "/{enrollment_id}/registration-key",
    summary="The registration keys of an enrollment (first halves only)",
)
def show(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> RegistrationKeys:
    visible_enrollment(runtime, principal, enrollment_id, Role.VIEWER)  # 404: unknown, foreign
    at = datetime.now(UTC)
    keys = _store(runtime).for_enrollment(enrollment_id)
    return RegistrationKeys(
        enrollment_id=enrollment_id, keys=[RegistrationKeyOut.of(k, at) for k in keys]
    )
