"""OAuth clients of an organization: machines and applications that get tokens."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.auth.clients import CLIENT_CREDENTIALS, OAuthClient, create_client
from imprint.errors import Conflict, InvalidValue, NotFound, PermissionDenied
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope
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


def _visible(runtime: Runtime, principal: Principal, client_id: str) -> OAuthClient:
    scope = org_scope(principal, runtime.org_tree())
    stored = runtime.oauth_clients.find(client_id) if len(client_id) <= 100 else None
    if stored is not None and (scope is None or stored.org_id in scope):
        return stored
    if scope is None:
        for client in runtime.clients.configured:
            if client.client_id == client_id:
                return client
    raise NotFound(f"no OAuth client {client_id!r}")


@router.post("", status_code=201, summary="Create a client (operator of its organization)")
def create(
    body: ClientIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> CreatedClient:
    response.headers["Cache-Control"] = "no-store"
    if body.org_id is None:
        if not principal.instance_admin:
            raise InvalidValue("org_id: the organization the client acts for")
    else:
        tree = runtime.org_tree()
        mine = authorize(
            principal, body.org_id, Role.OPERATOR, tree, what=f"organization {body.org_id!r}"
        )
        if not mine.allows(body.role):
            raise PermissionDenied(
                "you cannot give a role above your own", code="role_insufficient"
            )
        runtime.orgs.get(body.org_id)
    issued = create_client(
        runtime.oauth_clients,
        body.name,
        grant_types=body.grant_types,
        scopes=body.scopes,
        audience=body.audience,
        redirect_uris=body.redirect_uris,
        org_id=body.org_id,
        role=body.role,
        public=body.public,
    )
    client = issued.client
    audit(
        runtime,
        principal,
        "oauth_client.create",
        "oauth_client",
        client.client_id,
        org_id=client.org_id,
        name=client.name,
        grant_types=list(client.grant_types),
        role=client.role.value,
    )
    return CreatedClient(**ClientOut.of(client).model_dump(), client_secret=issued.secret)


@router.get("", summary="The clients of the organizations you see")
def list_clients(runtime: RuntimeDep, principal: PrincipalDep) -> ClientPage:
    scope = org_scope(principal, runtime.org_tree())
    stored = runtime.oauth_clients.search(scope, 1000)
    configured = list(runtime.clients.configured) if scope is None else []
    return ClientPage(items=[ClientOut.of(c) for c in [*configured, *stored]])


@router.get("/{client_id}", summary="One client (never its secret)")
def show(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> ClientOut:
    return ClientOut.of(_visible(runtime, principal, client_id))


@router.delete("/{client_id}", status_code=204, summary="Delete a client; its tokens stop working")
def delete(client_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    client = _visible(runtime, principal, client_id)
    if client.configured:
        raise Conflict(
            "a configured client is removed from the configuration file", code="client_configured"
        )
    if client.org_id is not None:
        authorize(
            principal,
            client.org_id,
            Role.OPERATOR,
            runtime.org_tree(),
            what=f"OAuth client {client_id!r}",
        )
    runtime.oauth_clients.remove(client_id)
    audit(
        runtime, principal, "oauth_client.delete", "oauth_client", client_id, org_id=client.org_id
    )
    return Response(status_code=204)
