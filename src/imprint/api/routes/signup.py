"""Self-registration (the midPoint story's first step): an organization, its admin user
and a registration key for its devices, in one request. ``auth.self_registration:
false`` turns it off."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import RuntimeDep

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


@router.post(
    "/signup",
    status_code=201,
    summary="Register an organization and its admin",
    responses={
        403: {"description": "Self-registration is switched off"},
        409: {"description": "The user name or organization id is taken"},
        429: {"description": "Too many sign-ups from this address"},
    },
)
def signup(body: SignupIn, request: Request, runtime: RuntimeDep, response: Response) -> SignupOut:
    made = runtime.app.organizations.signup(
        organization=body.organization,
        username=body.username,
        password=body.password,
        org_id=body.org_id,
        source=request.client.host if request.client else None,
    )
    response.headers["Cache-Control"] = "no-store"
    return SignupOut(
        org_id=made.org.id,
        user_id=made.user.id,
        username=made.user.username,
        enrollment_id=made.enrollment.id,
        registration_key=made.registration_key,
    )
