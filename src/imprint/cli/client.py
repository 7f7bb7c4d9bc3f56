"""``imprint client ...``: OAuth clients (create, list)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from imprint.auth.clients import CLIENT_CREDENTIALS
from imprint.cli import err, out
from imprint.cli.org import open_local_runtime
from imprint.tenancy.access import cli_principal
from imprint.tenancy.roles import Role

app = typer.Typer(help="Manage OAuth clients: machines and applications that get tokens.")


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
) -> None:
    """Create a client; prints its id, then its secret once on standard output."""
    with open_local_runtime() as runtime:
        issued = runtime.app.oauth_clients.create(
            cli_principal(),
            name,
            grant_types=grant or [CLIENT_CREDENTIALS],
            scopes=scope or [],
            audience=audience,
            redirect_uris=redirect_uri or [],
            org_id=org,
            role=role,
            public=public,
        )
    client = issued.client
    err.print("client id, then its secret (shown once):")
    sys.stdout.write(client.client_id + "\n")
    if issued.secret is not None:
        sys.stdout.write(issued.secret + "\n")


@app.command("list")
def list_clients() -> None:
    """List stored and configured clients (never their secrets)."""
    with open_local_runtime() as runtime:
        clients = runtime.app.oauth_clients.list(cli_principal(), limit=10_000)
    table = Table(title="OAuth clients")
    for column in ("client id", "name", "grants", "org", "role", "source"):
        table.add_column(column)
    for c in clients:
        table.add_row(
            c.client_id,
            c.name,
            " ".join(c.grant_types),
            c.org_id or "-",
            c.role.value,
            "config" if c.configured else "database",
        )
    out.print(table)
