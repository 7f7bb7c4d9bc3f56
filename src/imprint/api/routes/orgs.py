"""Organizations: create (a root or a sub-organization), list what you see, show one,
rename, and delete an empty one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.organizations import OrgEntry
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
    def of(cls, entry: OrgEntry) -> OrgOut:
        org = entry.org
        return cls(
            id=org.id,
            name=org.name,
            parent_id=org.parent_id,
            created_at=org.created_at,
            children=entry.children,
            role=entry.role,
        )


class OrgPage(BaseModel):
    items: list[OrgOut]
    total: int
    next: str | None = None


class OrgPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="The new display name")


@router.post("", status_code=201, summary="Create an organization (admin of the parent)")
def create(body: OrgIn, runtime: RuntimeDep, principal: PrincipalDep) -> OrgOut:
    entry = runtime.app.organizations.create(
        principal, body.name, parent_id=body.parent_id, org_id=body.id
    )
    return OrgOut.of(entry)


@router.get("", summary="The organizations you see: yours and everything below them")
def list_orgs(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=100, description="A page's 'next'")] = None,
) -> OrgPage:
    found = runtime.app.organizations.page(principal, limit=limit, after=after)
    return OrgPage(items=[OrgOut.of(e) for e in found.items], total=found.total, next=found.next)


@router.get("/{org_id}", summary="One organization (404 when it is not yours)")
def show(org_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> OrgOut:
    return OrgOut.of(runtime.app.organizations.show(principal, org_id))


@router.patch("/{org_id}", summary="Rename an organization (admin there); its id stays")
def rename(org_id: str, body: OrgPatch, runtime: RuntimeDep, principal: PrincipalDep) -> OrgOut:
    return OrgOut.of(runtime.app.organizations.rename(principal, org_id, body.name))


@router.delete(
    "/{org_id}", status_code=204, summary="Delete an empty organization (admin of its parent)"
)
def delete(org_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.organizations.delete(principal, org_id)
    return Response(status_code=204)
