"""``imprint client ...``: OAuth clients (create, list, show, rotate-secret, delete)."""

from __future__ import annotations

import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from imprint.auth.clients import CLIENT_CREDENTIALS, IssuedClient, OAuthClient
from imprint.cli import err
from imprint.cli.calls import AllOption, CursorOption, LimitOption, Paging, paged, perform
from imprint.cli.output import (
    Column,
    Format,
    OutputOption,
    default_format,
    render_done,
    render_item,
    render_page,
)
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

app = typer.Typer(
    help="Manage OAuth clients: machines and applications that get tokens.", no_args_is_help=True
)

ClientId = Annotated[str, typer.Argument(help="The client id")]

COLUMNS = [
    Column("client id", "client_id", key=True),
    Column("name", "name"),
    Column("grants", "grant_types"),
    Column("org", "org_id"),
    Column("role", "role"),
    Column("configured", "configured"),
]
FIELDS = [
    *COLUMNS,
    Column("public", "public"),
    Column("scopes", "scopes"),
    Column("audience", "audience"),
    Column("redirect URIs", "redirect_uris"),
    Column("created", "created_at"),
]


def _json(client: OAuthClient) -> dict[str, Any]:
    from imprint.api.routes.oauth_clients import ClientOut

    return ClientOut.of(client).model_dump(mode="json")


def _issued(issued: IssuedClient) -> dict[str, Any]:
    return {**_json(issued.client), "client_secret": issued.secret}


def _print_secret(made: dict[str, Any], output: Format | None, what: str) -> None:
    if (output or default_format()) is Format.table:
        err.print(f"{what}; client id, then its secret (shown once):")
        sys.stdout.write(f"{made['client_id']}\n")
        if made.get("client_secret") is not None:
            sys.stdout.write(f"{made['client_secret']}\n")
    else:
        render_item(made, output, fields=[*FIELDS, Column("client secret", "client_secret")])


def _path(client_id: str) -> str:
    return f"/api/v1/oauth-clients/{quote(client_id, safe='')}"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the client")],
    org: Annotated[
        str | None, typer.Option(help="Organization it acts for (its tokens' owner claim)")
    ] = None,
    role: Annotated[Role, typer.Option(help="Its role in --org")] = Role.VIEWER,
    grant: Annotated[
        list[str] | None,
        typer.Option(help="client_credentials (default) and/or authorization_code"),
    ] = None,
    scope: Annotated[list[str] | None, typer.Option(help="A scope it may ask for")] = None,
    audience: Annotated[str | None, typer.Option(help="aud of its tokens")] = None,
    redirect_uri: Annotated[list[str] | None, typer.Option(help="For authorization_code")] = None,
    public: Annotated[bool, typer.Option(help="No secret (authorization code + PKCE)")] = False,
    output: OutputOption = None,
) -> None:
    """Create a client; prints its id, then its secret once on standard output."""
    grants = grant or [CLIENT_CREDENTIALS]

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        return _issued(
            runtime.app.oauth_clients.create(
                principal,
                name,
                grant_types=grants,
                scopes=scope or [],
                audience=audience,
                redirect_uris=redirect_uri or [],
                org_id=org,
                role=role,
                public=public,
            )
        )

    body = {
        "name": name,
        "grant_types": grants,
        "scopes": scope or [],
        "audience": audience,
        "redirect_uris": redirect_uri or [],
        "org_id": org,
        "role": role.value,
        "public": public,
    }
    made = perform(local=local, remote=lambda api: api.post("/api/v1/oauth-clients", body))
    _print_secret(made, output, f"client {name!r} created")


@app.command("list")
def list_clients(
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List stored and configured clients (never their secrets)."""
    found = paged(
        lambda rt, principal, after: rt.app.oauth_clients.page(principal, limit=limit, after=after),
        "/api/v1/oauth-clients",
        item=_json,
        paging=Paging(limit, cursor, every),
    )
    render_page(found, COLUMNS, output, noun="OAuth client(s)")


@app.command("show")
def show(client_id: ClientId, output: OutputOption = None) -> None:
    """One client (never its secret)."""
    found = perform(
        local=lambda rt, p: _json(rt.app.oauth_clients.show(p, client_id)),
        remote=lambda api: api.get(_path(client_id)),
    )
    render_item(found, output, fields=FIELDS)


@app.command("rotate-secret")
def rotate_secret(client_id: ClientId, output: OutputOption = None) -> None:
    """Give a client a new secret (printed once); the old secret is refused from now on."""
    made = perform(
        local=lambda rt, p: _issued(rt.app.oauth_clients.rotate_secret(p, client_id)),
        remote=lambda api: api.post(f"{_path(client_id)}/rotate-secret"),
    )
    _print_secret(made, output, f"client {client_id!r}: secret rotated")


@app.command("delete")
def delete(client_id: ClientId, output: OutputOption = None) -> None:
    """Delete a client; its tokens stop working."""
    perform(
        local=lambda rt, p: rt.app.oauth_clients.delete(p, client_id),
        remote=lambda api: api.delete(_path(client_id)),
    )
    render_done({"client_id": client_id, "deleted": True}, output, f"client {client_id} deleted")
