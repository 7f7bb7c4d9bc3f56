"""Organizations: create (a root or a sub-organization), list what you see, show one."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.errors import PermissionDenied
from imprint.tenancy.access import authorize, org_scope, role_in
from imprint.tenancy.orgs import Organization, OrgTree, create_organization
from imprint.tenancy.roles import Role

router = APIRouter(prefix="/api/v1/orgs", tags=["organizations"])


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    id: str | None = Field(
        default=None,
        max_length=100,
        description="Stable id, the owner value of its objects (default generated)",
    )
    parent_id: str | None = Field(default=None, max_length=100)


class OrgOut(BaseModel):
    id: str
    name: str
    parent_id: str | None
    created_at: datetime
    children: list[str]
    role: Role | None = Field(description="Your role for objects of this organization")

    @classmethod
    def of(cls, org: Organization, tree: OrgTree, role: Role | None) -> OrgOut:
        return cls(
            id=org.id,
            name=org.name,
            parent_id=org.parent_id,
            created_at=org.created_at,
            children=tree.children(org.id),
            role=role,
        )


class OrgPage(BaseModel):
    items: list[OrgOut]


@router.post("", status_code=201, summary="Create an organization (admin of the parent)")
def create(body: OrgIn, runtime: RuntimeDep, principal: PrincipalDep) -> OrgOut:
    tree = runtime.org_tree()
    if body.parent_id is None:
        if not principal.instance_admin:
            raise PermissionDenied(
                "only an API key creates top-level organizations; name a parent_id",
                code="role_insufficient",
            )
    else:
        authorize(
            principal, body.parent_id, Role.ADMIN, tree, what=f"organization {body.parent_id!r}"
        )
    org = create_organization(runtime.orgs, body.name, parent_id=body.parent_id, org_id=body.id)
    audit(
        runtime,
        principal,
        "org.create",
        "organization",
        org.id,
        org_id=org.id,
        name=org.name,
        parent_id=org.parent_id,
    )
    tree = runtime.org_tree()
    return OrgOut.of(org, tree, role_in(principal, org.id, tree))


@router.get("", summary="The organizations you see: yours and everything below them")
def list_orgs(runtime: RuntimeDep, principal: PrincipalDep) -> OrgPage:
    tree = runtime.org_tree()
    scope = org_scope(principal, tree)
    visible = [o for o in tree.orgs.values() if scope is None or o.id in scope]
    visible.sort(key=lambda o: o.id)
    return OrgPage(items=[OrgOut.of(o, tree, role_in(principal, o.id, tree)) for o in visible])


@router.get("/{org_id}", summary="One organization (404 when it is not yours)")
def show(org_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> OrgOut:
    tree = runtime.org_tree()
    role = authorize(principal, org_id, Role.VIEWER, tree, what=f"organization {org_id!r}")
    return OrgOut.of(runtime.orgs.get(org_id), tree, role)
