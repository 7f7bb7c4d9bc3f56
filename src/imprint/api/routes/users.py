"""Users: create with a first membership, list, show, give or take roles, change or
reset a password, disable and enable."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.api.sign_in import check_password
from imprint.app.auditing import audit
from imprint.errors import Conflict, NotFound, PermissionDenied
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope, role_in
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User, create_user, set_password

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


def _managed_user(runtime: Runtime, principal: Principal, user_id: str, tree: OrgTree) -> User:
    """A user whose account the principal may manage: admin of every organization she
    is a member of (or the whole instance), and not the principal herself."""
    user = _visible_user(runtime, principal, user_id, tree)
    if principal.kind == "user" and principal.subject == user.id:
        raise Conflict(
            "this is your own account: change your password with PUT "
            "/api/v1/users/me/password; another admin disables you",
            code="own_account",
        )
    if principal.instance_admin:
        return user
    roles = [role_in(principal, org_id, tree) for org_id in user.memberships or {}]
    for role in roles:
        if role is not None and role is not Role.ADMIN:
            raise PermissionDenied(
                f"this needs the admin role; you are {role.value}", code="role_insufficient"
            )
    if None in roles:
        raise PermissionDenied(
            "she is also a member of an organization you do not administer",
            code="user_managed_elsewhere",
        )
    return user


@router.put(
    "/me/password",
    status_code=204,
    summary="Change your own password (your other sessions and tokens end)",
)
def change_own_password(
    body: OwnPasswordIn, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    if principal.kind != "user":
        raise PermissionDenied(
            "only a user of this instance has a password here", code="not_a_local_user"
        )
    source = request.client.host if request.client else None
    user = check_password(
        runtime, source, principal.name, body.current_password, via="password-change"
    )
    if user is None or user.id != principal.subject:
        raise PermissionDenied("the current password is wrong", code="password_wrong")
    set_password(runtime.users, user.id, body.new_password)
    audit(runtime, principal, "user.password.change", "user", user.id)
    return Response(status_code=204)


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


@router.put(
    "/{user_id}/password",
    status_code=204,
    summary="Reset a user's password (admin of all her organizations)",
)
def reset_password(
    user_id: str, body: PasswordIn, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    user = _managed_user(runtime, principal, user_id, runtime.org_tree())
    set_password(runtime.users, user.id, body.password)
    audit(runtime, principal, "user.password.reset", "user", user.id)
    return Response(status_code=204)


@router.patch("/{user_id}", summary="Disable or enable a user (admin of all her organizations)")
def update_user(
    user_id: str, body: UserPatch, runtime: RuntimeDep, principal: PrincipalDep
) -> UserOut:
    tree = runtime.org_tree()
    user = _managed_user(runtime, principal, user_id, tree)
    runtime.users.set_disabled(user.id, body.disabled)
    action = "user.disable" if body.disabled else "user.enable"
    audit(runtime, principal, action, "user", user.id)
    return UserOut.of(runtime.users.get(user.id), org_scope(principal, tree))
