"""Admin API for an enrollment's registration key: create or rotate, and show.

Scoped by the enrollment's organization: admins create and rotate keys, viewers see
the first halves; a foreign enrollment answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.provisioning.registration_keys import DEFAULT_HALF_LENGTH, KeyState, RegistrationKey

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
    require_current: bool | None = Field(
        default=None,
        description="true: only rotate (404 without a key yet); false: only create the first "
        "key (409 registration_key_exists when there is one); null: create or rotate",
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

    @classmethod
    def of(
        cls, enrollment_id: str, current: RegistrationKey, previous: RegistrationKey | None
    ) -> IssuedRegistrationKey:
        at = current.created_at
        return cls(
            enrollment_id=enrollment_id,
            key=current.key,
            current=RegistrationKeyOut.of(current, at),
            previous=None if previous is None else RegistrationKeyOut.of(previous, at),
        )


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
    body = body or RegistrationKeyIn()
    response.headers["Cache-Control"] = "no-store"
    if body.require_current is False:
        made = runtime.app.registration_keys.create(
            principal, enrollment_id, key=body.key, half_length=body.half_length
        )
        return IssuedRegistrationKey.of(enrollment_id, made, None)
    rotation = runtime.app.registration_keys.rotate(
        principal,
        enrollment_id,
        transition=body.transition,
        key=body.key,
        half_length=body.half_length,
        require_current=body.require_current,
    )
    return IssuedRegistrationKey.of(enrollment_id, rotation.current, rotation.previous)


@router.get(
    "/{enrollment_id}/registration-key",
    summary="The registration keys of an enrollment (first halves only)",
)
def show(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> RegistrationKeys:
    keys = runtime.app.registration_keys.show(principal, enrollment_id)
    at = runtime.clock.now()
    return RegistrationKeys(
        enrollment_id=enrollment_id, keys=[RegistrationKeyOut.of(k, at) for k in keys]
    )
