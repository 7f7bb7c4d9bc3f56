"""``imprint org ...``: organizations (create, list, show, tree, rename, delete)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.tree import Tree

from imprint.app.organizations import OrgEntry
from imprint.cli import _errors, _local_only, _settings, out
from imprint.cli.calls import AllOption, CursorOption, LimitOption, Paging, paged, perform
from imprint.cli.output import Column, OutputOption, render_done, render_item, render_page
from imprint.runtime import Runtime, open_runtime

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


def _list(limit: int = 1000, cursor: str | None = None, every: bool = True) -> dict[str, Any]:
    return paged(
        lambda rt, principal, after: rt.app.organizations.page(principal, limit=limit, after=after),
        "/api/v1/orgs",
        item=_json,
        paging=Paging(limit, cursor, every),
    )


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
def list_orgs(
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List the organizations you see, a page at a time, with how many there are."""
    render_page(_list(limit, cursor, every), COLUMNS, output, noun="organization(s)")


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
