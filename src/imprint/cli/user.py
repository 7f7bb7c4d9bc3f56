"""``imprint user ...``: people who log in (create, list, role, password, disable,
enable)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from imprint.cli import _fail, out
from imprint.cli.org import open_local_runtime
from imprint.tenancy.access import cli_principal
from imprint.tenancy.roles import Role

app = typer.Typer(help="Manage users, their roles in organizations and their accounts.")

RoleOption = Annotated[Role, typer.Option(help="viewer, operator or admin")]


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="User name, usually an e-mail address")],
    org: Annotated[str, typer.Option(help="Organization of the first membership")],
    role: RoleOption = Role.VIEWER,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user with a password (asked for) and a role in one organization."""
    with open_local_runtime() as runtime:
        user = runtime.app.users.create(cli_principal(), username, password, org_id=org, role=role)
    out.print(user.id)


@app.command("list")
def list_users(
    org: Annotated[str | None, typer.Option(help="Only members of this organization")] = None,
) -> None:
    """List users and their memberships."""
    with open_local_runtime() as runtime:
        users = runtime.app.users.list(cli_principal(), org_id=org, limit=10_000)
    table = Table(title="users")
    for column in ("id", "username", "memberships", "disabled"):
        table.add_column(column)
    for user in users:
        roles = ", ".join(f"{o}:{r.value}" for o, r in sorted((user.memberships or {}).items()))
        table.add_row(user.id, user.username, roles or "-", "yes" if user.disabled else "no")
    out.print(table)


@app.command("role")
def role(
    username: Annotated[str, typer.Argument(help="User name")],
    org: Annotated[str, typer.Argument(help="Organization id")],
    new_role: Annotated[
        str, typer.Argument(metavar="ROLE", help="viewer, operator, admin or none")
    ],
) -> None:
    """Give a user a role in an organization, or take it away with ``none``."""
    if new_role not in {*Role._value2member_map_, "none"}:
        _fail("ROLE: viewer, operator, admin or none", 2)
    with open_local_runtime() as runtime:
        users = runtime.app.users
        user = users.find(cli_principal(), username)
        if new_role == "none":
            users.remove_role(cli_principal(), user.id, org)
        else:
            users.set_role(cli_principal(), user.id, org, Role(new_role))
    out.print(f"{user.username}: {org} {new_role}")


@app.command("password")
def password(
    username: Annotated[str, typer.Argument(help="User name")],
    new_password: Annotated[
        str,
        typer.Option(
            "--password", prompt="New password", hide_input=True, confirmation_prompt=True
        ),
    ] = "",
) -> None:
    """Set a user's password (asked for); her console sessions and tokens end."""
    with open_local_runtime() as runtime:
        users = runtime.app.users
        user = users.reset_password(
            cli_principal(), users.find(cli_principal(), username).id, new_password
        )
    out.print(f"{user.username}: password changed; sessions and tokens issued before end")


def _set_disabled(username: str, disabled: bool) -> None:
    with open_local_runtime() as runtime:
        users = runtime.app.users
        found = users.find(cli_principal(), username)
        user = (users.disable if disabled else users.enable)(cli_principal(), found.id)
    out.print(f"{user.username}: {'disabled' if disabled else 'enabled'}")


@app.command("disable")
def disable(username: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Disable a user: she cannot sign in, and her sessions and tokens stop working."""
    _set_disabled(username, True)


@app.command("enable")
def enable(username: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False)
