"""Users: create with a first membership, list, show, give or take roles, change or
reset a password, disable, enable and delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User

router = APIRouter(prefix="/api/v1/users", tags=["users"])


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=200, description="Usually an e-mail address")
    password: str = Field(min_length=1, max_length=1024)
    org_id: str = Field(max_length=100, description="Organization of the first membership")
    role: Role = Role.VIEWER


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class OwnPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="The new password")


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disabled: bool = Field(description="A disabled user cannot sign in; her sessions end")


class UserOut(BaseModel):
    id: str
    username: str
    disabled: bool
    created_at: datetime | None
    memberships: dict[str, Role] = Field(description="Organization id -> role (those you see)")

    @classmethod
    def of(cls, user: User) -> UserOut:
        """``user`` as an operation returned her: with the memberships the caller sees."""
        return cls(
            id=user.id,
            username=user.username,
            disabled=user.disabled,
            created_at=user.created_at,
            memberships=dict(user.memberships or {}),
        )


class UserPage(BaseModel):
    items: list[UserOut]
    total: int = Field(description="How many users match, over all pages")
    next: str | None = Field(default=None, description="Pass as ?after= for the next page")


@router.put(
    "/me/password",
    status_code=204,
    summary="Change your own password (your other sessions and tokens end)",
)
def change_own_password(
    body: OwnPasswordIn, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    runtime.app.users.change_own_password(
        principal,
        body.current_password,
        body.new_password,
        source=request.client.host if request.client else None,
    )
    return Response(status_code=204)


@router.post("", status_code=201, summary="Create a user (admin of the organization)")
def create(body: UserIn, runtime: RuntimeDep, principal: PrincipalDep) -> UserOut:
    user = runtime.app.users.create(
        principal, body.username, body.password, org_id=body.org_id, role=body.role
    )
    return UserOut.of(user)


@router.get("", summary="Users with a membership in an organization you see, by user name")
def list_users(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200, description="The previous next")] = None,
    org_id: Annotated[str | None, Query(max_length=100)] = None,
    username: Annotated[
        str | None, Query(max_length=200, description="Only the user of this name")
    ] = None,
) -> UserPage:
    page = runtime.app.users.page(
        principal, org_id=org_id, limit=limit, after=after, username=username
    )
    return UserPage(items=[UserOut.of(u) for u in page.items], total=page.total, next=page.next)


@router.get("/{user_id}", summary="One user (404 when she is in none of your organizations)")
def show(user_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> UserOut:
    return UserOut.of(runtime.app.users.show(principal, user_id))


@router.put("/{user_id}/roles/{org_id}", summary="Give a user a role in an organization")
def set_role(
    user_id: str, org_id: str, body: RoleIn, runtime: RuntimeDep, principal: PrincipalDep
) -> UserOut:
    return UserOut.of(runtime.app.users.set_role(principal, user_id, org_id, body.role))


@router.delete(
    "/{user_id}/roles/{org_id}", status_code=204, summary="Take a user's membership away"
)
def remove_role(
    user_id: str, org_id: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    runtime.app.users.remove_role(principal, user_id, org_id)
    return Response(status_code=204)


@router.put(
    "/{user_id}/password",
    status_code=204,
    summary="Reset a user's password (admin of all her organizations)",
)
def reset_password(
    user_id: str, body: PasswordIn, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    runtime.app.users.reset_password(principal, user_id, body.password)
    return Response(status_code=204)


@router.delete(
    "/{user_id}",
    status_code=204,
    summary="Delete a user (admin of all her organizations); the audit log keeps her entries",
)
def delete_user(user_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.users.delete(principal, user_id)
    return Response(status_code=204)


@router.patch("/{user_id}", summary="Disable or enable a user (admin of all her organizations)")
def update_user(
    user_id: str, body: UserPatch, runtime: RuntimeDep, principal: PrincipalDep
) -> UserOut:
    users = runtime.app.users
    changed = users.disable if body.disabled else users.enable
    return UserOut.of(changed(principal, user_id))
