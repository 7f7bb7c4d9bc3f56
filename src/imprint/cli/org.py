"""``imprint org ...``: organizations (create, list, show, tree, rename, delete)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.tree import Tree

from imprint.app.organizations import OrgEntry
from imprint.audit import AuditEntry
from imprint.cli import _errors, _local_only, _settings, out
from imprint.cli.calls import perform
from imprint.cli.output import Column, OutputOption, render_done, render_item, render_page
from imprint.runtime import Runtime, open_runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Manage organizations: customers and their sub-organizations.", no_args_is_help=True
)


@contextmanager
def open_local_runtime() -> Iterator[Runtime]:
    """The runtime for one command; the command line acts for the whole instance."""
    _local_only()
    settings = _settings()
    with _errors():
        runtime = open_runtime(settings)
    try:
        with _errors():
            yield runtime
    finally:
        runtime.close()


def cli_audit(  # for the commands not yet moved to an operation (import plgd-values)
    runtime: Runtime,
    action: str,
    target_type: str,
    target_id: str,
    org_id: str | None,
    **details: Any,
) -> None:
    """Write the audit entry of a command-line change (actor ``cli:<login name>``)."""
    runtime.audit.write(
        AuditEntry(
            actor=f"cli:{getpass.getuser()}",
            action=action,
            target_type=target_type,
            target_id=target_id,
            org_id=org_id,
            details=details,
        )
    )


COLUMNS = [
    Column("id", "id", key=True),
    Column("name", "name"),
    Column("parent", "parent_id", key=True),
    Column("your role", "role"),
    Column("created", "created_at"),
]
FIELDS = [*COLUMNS, Column("children", "children")]


def _json(entry: OrgEntry) -> dict[str, Any]:
    from imprint.api.routes.orgs import OrgOut

    return OrgOut.of(entry).model_dump(mode="json")


def _path(org_id: str) -> str:
    return f"/api/v1/orgs/{quote(org_id, safe='')}"


def _list() -> dict[str, Any]:
    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        items = [_json(e) for e in runtime.app.organizations.list(principal)]
        return {"items": items, "total": len(items), "next": None}

    page: dict[str, Any] = perform(local=local, remote=lambda api: api.get("/api/v1/orgs"))
    return page


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name")],
    org_id: Annotated[
        str | None, typer.Option("--id", help="Stable id, the owner value (default generated)")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Parent organization id")] = None,
    output: OutputOption = None,
) -> None:
    """Create an organization, top-level or below --parent."""
    made = perform(
        local=lambda rt, p: _json(
            rt.app.organizations.create(p, name, parent_id=parent, org_id=org_id)
        ),
        remote=lambda api: api.post(
            "/api/v1/orgs", {"name": name, "id": org_id, "parent_id": parent}
        ),
    )
    render_done(made, output, f"organization {made['id']} ({made['name']}) created", fields=FIELDS)


@app.command("list")
def list_orgs(output: OutputOption = None) -> None:
    """List the organizations you see."""
    render_page(_list(), COLUMNS, output, noun="organization(s)")


@app.command("show")
def show(
    org_id: Annotated[str, typer.Argument(help="Organization id")], output: OutputOption = None
) -> None:
    """One organization."""
    found = perform(
        local=lambda rt, p: _json(rt.app.organizations.show(p, org_id)),
        remote=lambda api: api.get(_path(org_id)),
    )
    render_item(found, output, fields=FIELDS)


@app.command("rename")
def rename(
    org_id: Annotated[str, typer.Argument(help="Organization id (it stays)")],
    name: Annotated[str, typer.Argument(help="The new display name")],
    output: OutputOption = None,
) -> None:
    """Give an organization a new display name; its id never changes."""
    done = perform(
        local=lambda rt, p: _json(rt.app.organizations.rename(p, org_id, name)),
        remote=lambda api: api.patch(_path(org_id), {"name": name}),
    )
    render_done(done, output, f"organization {done['id']} is now {done['name']!r}", fields=FIELDS)


@app.command("delete")
def delete(
    org_id: Annotated[str, typer.Argument(help="Organization id")], output: OutputOption = None
) -> None:
    """Delete an organization that holds nothing any more (no sub-organizations, members,
    enrollments, devices, channels, clients or valid certificates)."""
    perform(
        local=lambda rt, p: rt.app.organizations.delete(p, org_id),
        remote=lambda api: api.delete(_path(org_id)),
    )
    render_done({"id": org_id, "deleted": True}, output, f"organization {org_id} deleted")


@app.command("tree")
def tree() -> None:
    """Show the organizations as a tree."""
    orgs = {o["id"]: o for o in _list()["items"]}
    top = Tree("organizations")

    def add(node: Tree, org_id: str) -> None:
        branch = node.add(f"{org_id} ({orgs[org_id]['name']})")
        for child in sorted(o for o in orgs if orgs[o]["parent_id"] == org_id):
            add(branch, child)

    for root in sorted(o for o in orgs if orgs[o]["parent_id"] not in orgs):
        add(top, root)
    out.print(top)
