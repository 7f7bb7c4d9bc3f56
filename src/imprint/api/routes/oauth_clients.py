"""OAuth clients of an organization: machines and applications that get tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.auth.clients import CLIENT_CREDENTIALS, OAuthClient
from imprint.tenancy.roles import Role

router = APIRouter(prefix="/api/v1/oauth-clients", tags=["oauth"])


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    grant_types: list[str] = Field(default_factory=lambda: [CLIENT_CREDENTIALS], max_length=2)
    scopes: list[str] = Field(default_factory=list, max_length=50)
    audience: str | None = Field(default=None, max_length=500)
    redirect_uris: list[str] = Field(default_factory=list, max_length=20)
    org_id: str | None = Field(
        default=None, max_length=100, description="Its organization: the owner claim of its tokens"
    )
    role: Role = Field(default=Role.VIEWER, description="Its role in that organization")
    public: bool = Field(default=False, description="No secret (authorization code + PKCE only)")


class ClientOut(BaseModel):
    client_id: str
    name: str
    public: bool
    grant_types: list[str]
    scopes: list[str]
    audience: str | None
    redirect_uris: list[str]
    org_id: str | None
    role: Role
    configured: bool = Field(description="From auth.clients in the configuration file")
    created_at: datetime | None

    @classmethod
    def of(cls, client: OAuthClient) -> ClientOut:
        return cls(
            client_id=client.client_id,
            name=client.name,
            public=client.public,
            grant_types=list(client.grant_types),
            scopes=list(client.scopes),
            audience=client.audience,
            redirect_uris=list(client.redirect_uris),
            org_id=client.org_id,
            role=client.role,
            configured=client.configured,
            created_at=client.created_at,
        )


class CreatedClient(ClientOut):
    client_secret: str | None = Field(description="Shown here once; only its SHA-256 is stored")


class ClientPage(BaseModel):
    items: list[ClientOut]
    total: int
    next: str | None = None


@router.post("", status_code=201, summary="Create a client (operator of its organization)")
def create(
    body: ClientIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> CreatedClient:
    response.headers["Cache-Control"] = "no-store"
    issued = runtime.app.oauth_clients.create(
        principal,
        body.name,
        grant_types=body.grant_types,
        scopes=body.scopes,
        audience=body.audience,
        redirect_uris=body.redirect_uris,
        org_id=body.org_id,
        role=body.role,
        public=body.public,
    )
    return CreatedClient(**ClientOut.of(issued.client).model_dump(), client_secret=issued.secret)


@router.get("", summary="The clients of the organizations you see")
def list_clients(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200, description="A page's 'next'")] = None,
) -> ClientPage:
    found = runtime.app.oauth_clients.page(principal, limit=limit, after=after)
    return ClientPage(
        items=[ClientOut.of(c) for c in found.items], total=found.total, next=found.next
    )


@router.get("/{client_id}", summary="One client (never its secret)")
def show(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> ClientOut:
    return ClientOut.of(runtime.app.oauth_clients.show(principal, client_id))


@router.post(
    "/{client_id}/rotate-secret",
    summary="A new secret for the client, shown once; the old one is refused from now on",
)
def rotate_secret(
    client_id: str, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> CreatedClient:
    response.headers["Cache-Control"] = "no-store"
    issued = runtime.app.oauth_clients.rotate_secret(principal, client_id)
    return CreatedClient(**ClientOut.of(issued.client).model_dump(), client_secret=issued.secret)


@router.delete("/{client_id}", status_code=204, summary="Delete a client; its tokens stop working")
def delete(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.oauth_clients.delete(principal, client_id)
    return Response(status_code=204)
