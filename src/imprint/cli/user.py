"""``imprint user ...``: people who log in (create, list, show, role, password, disable,
enable, delete).

A user is named by her user name. Passwords are asked for without echo, or read from
the first line of standard input when it is not a terminal.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from imprint.cli import _fail, read_secret
from imprint.cli.calls import Api, all_pages, perform
from imprint.cli.output import Column, OutputOption, render_done, render_item, render_page
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role
from imprint.tenancy.users import User

app = typer.Typer(
    help="Manage users, their roles in organizations and their accounts.", no_args_is_help=True
)

RoleOption = Annotated[Role, typer.Option(help="viewer, operator or admin")]
UserName = Annotated[str, typer.Argument(help="User name")]

COLUMNS = [
    Column("id", "id", key=True),
    Column("username", "username", key=True),
    Column("memberships", "memberships"),
    Column("disabled", "disabled"),
]
FIELDS = [*COLUMNS, Column("created", "created_at")]


def _json(user: User) -> dict[str, Any]:
    from imprint.api.routes.users import UserOut

    return UserOut.of(user).model_dump(mode="json")


def _remote_user(api: Api, username: str) -> dict[str, Any]:
    """The user of this name, as the REST API shows her (its paths name users by id)."""
    from imprint.cli.calls import RemoteError

    items = api.get("/api/v1/users", username=username)["items"]
    if not items:
        raise RemoteError(f"no user {username!r}", 404)
    found: dict[str, Any] = items[0]
    return found


def _user_path(user: dict[str, Any]) -> str:
    return f"/api/v1/users/{quote(str(user['id']), safe='')}"


@app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="User name, usually an e-mail address")],
    org: Annotated[str, typer.Option(help="Organization of the first membership")],
    role: RoleOption = Role.VIEWER,
    output: OutputOption = None,
) -> None:
    """Create a user with a password (asked for twice, or one line on standard input) and a
    role in one organization."""
    password = read_secret("Password", confirm=True)
    made = perform(
        local=lambda rt, p: _json(
            rt.app.users.create(p, username, password, org_id=org, role=role)
        ),
        remote=lambda api: api.post(
            "/api/v1/users",
            {"username": username, "password": password, "org_id": org, "role": role.value},
        ),
    )
    render_done(made, output, f"user {made['username']} created ({made['id']})", fields=FIELDS)


@app.command("list")
def list_users(
    org: Annotated[str | None, typer.Option(help="Only members of this organization")] = None,
    limit: Annotated[int, typer.Option(help="At most this many a page (1 to 1000)")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Start at this page (a list's next)")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page from here")] = False,
    output: OutputOption = None,
) -> None:
    """List users and their memberships, by user name."""
    if not 1 <= limit <= 1000:
        _fail("--limit: 1 to 1000", 2)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        def page(after: str | None) -> dict[str, Any]:
            found = runtime.app.users.page(principal, org_id=org, limit=limit, after=after)
            return {
                "items": [_json(u) for u in found.items],
                "total": found.total,
                "next": found.next,
            }

        return all_pages(page, cursor, every)

    def remote(api: Api) -> dict[str, Any]:
        def page(after: str | None) -> dict[str, Any]:
            answer: dict[str, Any] = api.get("/api/v1/users", org_id=org, limit=limit, after=after)
            return answer

        return all_pages(page, cursor, every)

    render_page(perform(local=local, remote=remote), COLUMNS, output, noun="user(s)")


@app.command("show")
def show(username: UserName, output: OutputOption = None) -> None:
    """One user."""
    found = perform(
        local=lambda rt, p: _json(rt.app.users.find(p, username)),
        remote=lambda api: _remote_user(api, username),
    )
    render_item(found, output, fields=FIELDS)


@app.command("role")
def role(
    username: UserName,
    org: Annotated[str, typer.Argument(help="Organization id")],
    new_role: Annotated[
        str, typer.Argument(metavar="ROLE", help="viewer, operator, admin or none")
    ],
    output: OutputOption = None,
) -> None:
    """Give a user a role in an organization, or take it away with ``none``."""
    if new_role not in {*Role._value2member_map_, "none"}:
        _fail("ROLE: viewer, operator, admin or none", 2)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        users = runtime.app.users
        user = users.find(principal, username)
        if new_role == "none":
            users.remove_role(principal, user.id, org)
            return _json(users.show(principal, user.id))
        return _json(users.set_role(principal, user.id, org, Role(new_role)))

    def remote(api: Api) -> dict[str, Any]:
        user = _remote_user(api, username)
        path = f"{_user_path(user)}/roles/{quote(org, safe='')}"
        if new_role == "none":
            api.delete(path)
            answer: dict[str, Any] = api.get(_user_path(user))
        else:
            answer = api.put(path, {"role": new_role})
        return answer

    done = perform(local=local, remote=remote)
    render_done(done, output, f"{done['username']}: {org} {new_role}", fields=FIELDS)


@app.command("password")
def password(username: UserName, output: OutputOption = None) -> None:
    """Set a user's password (asked for twice, or one line on standard input); her console
    sessions and tokens end."""
    new_password = read_secret("New password", confirm=True)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        users = runtime.app.users
        return _json(
            users.reset_password(principal, users.find(principal, username).id, new_password)
        )

    def remote(api: Api) -> dict[str, Any]:
        user = _remote_user(api, username)
        api.put(f"{_user_path(user)}/password", {"password": new_password})
        return user

    done = perform(local=local, remote=remote)
    render_done(
        done,
        output,
        f"{done['username']}: password changed; sessions and tokens issued before end",
        fields=FIELDS,
    )


def _set_disabled(username: str, disabled: bool, output: Any) -> None:
    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        users = runtime.app.users
        found = users.find(principal, username)
        return _json((users.disable if disabled else users.enable)(principal, found.id))

    def remote(api: Api) -> dict[str, Any]:
        answer: dict[str, Any] = api.patch(
            _user_path(_remote_user(api, username)), {"disabled": disabled}
        )
        return answer

    done = perform(local=local, remote=remote)
    state = "disabled" if disabled else "enabled"
    render_done(done, output, f"{done['username']}: {state}", fields=FIELDS)


@app.command("disable")
def disable(username: UserName, output: OutputOption = None) -> None:
    """Deactivate a user: she cannot sign in, her sessions and tokens stop working; her
    account and audit trail stay."""
    _set_disabled(username, True, output)


@app.command("enable")
def enable(username: UserName, output: OutputOption = None) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False, output)


@app.command("delete")
def delete(username: UserName, output: OutputOption = None) -> None:
    """Delete a user and her memberships; her sessions and tokens end. The audit log keeps
    her entries (use ``disable`` to keep the account)."""

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        users = runtime.app.users
        return _json(users.delete(principal, users.find(principal, username).id))

    def remote(api: Api) -> dict[str, Any]:
        user = _remote_user(api, username)
        api.delete(_user_path(user))
        return user

    done = perform(local=local, remote=remote)
    render_done(done, output, f"user {done['username']} deleted", fields=FIELDS)
