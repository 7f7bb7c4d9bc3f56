"""Users: create with a first membership, list, show, and give or take roles."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.auditing import audit
from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.errors import NotFound, PermissionDenied
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User, create_user

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


class UserOut(BaseModel):
    id: str
    username: str
    disabled: bool
    created_at: datetime | None
    memberships: dict[str, Role] = Field(description="Organization id -> role (those you see)")

    @classmethod
    def of(cls, user: User, scope: set[str] | None) -> UserOut:
        roles = dict(user.memberships or {})
        return cls(
            id=user.id,
            username=user.username,
            disabled=user.disabled,
            created_at=user.created_at,
            memberships={o: r for o, r in roles.items() if scope is None or o in scope},
        )


class UserPage(BaseModel):
    items: list[UserOut]


def _visible_user(runtime: Runtime, principal: Principal, user_id: str, tree: OrgTree) -> User:
    scope = org_scope(principal, tree)
    try:
        user = runtime.users.get(user_id)
    except NotFound:
        user = None
    if user is None or (scope is not None and not set(user.memberships or {}) & scope):
        raise NotFound(f"no user {user_id!r}")
    return user


def _grant(principal: Principal, org_id: str, role: Role, tree: OrgTree) -> None:
    mine = authorize(principal, org_id, Role.ADMIN, tree, what=f"organization {org_id!r}")
    if not mine.allows(role):
        raise PermissionDenied("you cannot give a role above your own", code="role_insufficient")


@router.post("", status_code=201, summary="Create a user (admin of the organization)")
def create(body: UserIn, runtime: RuntimeDep, principal: PrincipalDep) -> UserOut:
    tree = runtime.org_tree()
    _grant(principal, body.org_id, body.role, tree)
    runtime.orgs.get(body.org_id)  # a membership names an existing organization
    user = create_user(
        runtime.users, body.username, body.password, org_id=body.org_id, role=body.role
    )
    audit(
        runtime,
        principal,
        "user.create",
        "user",
        user.id,
        org_id=body.org_id,
        username=user.username,
        role=body.role.value,
    )
    return UserOut.of(user, org_scope(principal, tree))


@router.get("", summary="Users with a membership in an organization you see")
def list_users(runtime: RuntimeDep, principal: PrincipalDep, limit: int = 100) -> UserPage:
    scope = org_scope(principal, runtime.org_tree())
    found = runtime.users.in_orgs(scope, max(1, min(limit, 1000)))
    return UserPage(items=[UserOut.of(u, scope) for u in found])


@router.get("/{user_id}", summary="One user (404 when she is in none of your organizations)")
def show(user_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> UserOut:
    tree = runtime.org_tree()
    user = _visible_user(runtime, principal, user_id, tree)
    return UserOut.of(user, org_scope(principal, tree))


@router.put("/{user_id}/roles/{org_id}", summary="Give a user a role in an organization")
def set_role(
    user_id: str, org_id: str, body: RoleIn, runtime: RuntimeDep, principal: PrincipalDep
) -> UserOut:
    tree = runtime.org_tree()
    _visible_user(runtime, principal, user_id, tree)
    _grant(principal, org_id, body.role, tree)
    runtime.orgs.get(org_id)
    runtime.users.set_membership(user_id, org_id, body.role)
    audit(runtime, principal, "user.role.set", "user", user_id, org_id=org_id, role=body.role.value)
    return UserOut.of(runtime.users.get(user_id), org_scope(principal, tree))


@router.delete(
    "/{user_id}/roles/{org_id}", status_code=204, summary="Take a user's membership away"
)
def remove_role(
    user_id: str, org_id: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    tree = runtime.org_tree()
    _visible_user(runtime, principal, user_id, tree)
    authorize(principal, org_id, Role.ADMIN, tree, what=f"organization {org_id!r}")
    runtime.users.set_membership(user_id, org_id, None)
    audit(runtime, principal, "user.role.remove", "user", user_id, org_id=org_id)
    return Response(status_code=204)
