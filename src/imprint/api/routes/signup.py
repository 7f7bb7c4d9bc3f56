"""Self-registration (the midPoint story's first step): an organization, its admin user
and a registration key for its devices, in one request. ``auth.self_registration:
false`` turns it off."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import RuntimeDep
from imprint.app.auditing import audit
from imprint.auth.passwords import check_password_policy
from imprint.errors import Conflict, PermissionDenied
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentKind,
    Mechanism,
    create_enrollment,
    new_enrollment_id,
)
from imprint.provisioning.registration_keys import create_registration_key
from imprint.store.registration_keys import SqlRegistrationKeyStore
from imprint.tenancy.orgs import create_organization, validate_org_id
from imprint.tenancy.roles import Role
from imprint.tenancy.users import create_user, normalize_username

router = APIRouter(prefix="/api/v1", tags=["organizations"])


class SignupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization: str = Field(min_length=1, max_length=200, description="Its display name")
    org_id: str | None = Field(default=None, max_length=100, description="Default generated")
    username: str = Field(min_length=1, max_length=200, description="The admin's e-mail")
    password: str = Field(min_length=1, max_length=1024)


class SignupOut(BaseModel):
    org_id: str
    user_id: str
    username: str
    enrollment_id: str
    registration_key: str = Field(description="Shown here once; type it into the devices")


@router.post("/signup", status_code=201, summary="Register an organization and its admin")
def signup(body: SignupIn, request: Request, runtime: RuntimeDep, response: Response) -> SignupOut:
    if not runtime.settings.auth.self_registration:
        raise PermissionDenied(
            "self-registration is switched off here", code="self_registration_disabled"
        )
    source = request.client.host if request.client else None
    limiter = runtime.login_limiter
    limiter.check(f"signup:{source}")
    limiter.failure(f"signup:{source}")  # every sign-up counts against the address
    username = normalize_username(body.username)
    check_password_policy(body.password)
    if body.org_id is not None:
        validate_org_id(body.org_id)
    if runtime.users.find_by_username(username) is not None:
        raise Conflict(f"a user named {username!r} exists already")
    org = create_organization(runtime.orgs, body.organization, org_id=body.org_id)
    user = create_user(runtime.users, username, body.password, org_id=org.id, role=Role.ADMIN)
    now = datetime.now(UTC).replace(microsecond=0)
    enrollment = create_enrollment(
        runtime.enrollments,
        Enrollment(
            id=new_enrollment_id(),
            kind=EnrollmentKind.GROUP,
            mechanism=Mechanism.REGISTRATION_KEY,
            owner=org.id,
            created_at=now,
            updated_at=now,
        ),
    )
    key = create_registration_key(
        SqlRegistrationKeyStore(runtime.engine, runtime.box),
        runtime.enrollments,
        enrollment.id,
        at=now,
    )
    audit(
        runtime,
        f"user:{user.username}",
        "signup",
        "organization",
        org.id,
        org_id=org.id,
        name=org.name,
        user_id=user.id,
        enrollment_id=enrollment.id,
    )
    response.headers["Cache-Control"] = "no-store"
    return SignupOut(
        org_id=org.id,
        user_id=user.id,
        username=user.username,
        enrollment_id=enrollment.id,
        registration_key=key.key,
    )
