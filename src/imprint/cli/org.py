"""``imprint org ...``: organizations (create, list, tree)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table
from rich.tree import Tree

from imprint.cli import _errors, _settings, out
from imprint.runtime import Runtime, open_runtime
from imprint.tenancy.access import cli_principal

app = typer.Typer(help="Manage organizations: customers and their sub-organizations.")


@contextmanager
def open_local_runtime() -> Iterator[Runtime]:
    """The runtime for one command; the command line acts for the whole instance."""
    settings = _settings()
    with _errors():
        runtime = open_runtime(settings)
    try:
        with _errors():
            yield runtime
    finally:
        runtime.close()


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Display name")],
    org_id: Annotated[
        str | None, typer.Option("--id", help="Stable id, the owner value (default generated)")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Parent organization id")] = None,
) -> None:
    """Create an organization, top-level or below --parent; prints its id."""
    with open_local_runtime() as runtime:
        entry = runtime.app.organizations.create(
            cli_principal(), name, parent_id=parent, org_id=org_id
        )
    out.print(entry.org.id)


@app.command("list")
def list_orgs() -> None:
    """List every organization."""
    with open_local_runtime() as runtime:
        orgs = [entry.org for entry in runtime.app.organizations.list(cli_principal())]
    table = Table(title="organizations")
    for column in ("id", "name", "parent", "created"):
        table.add_column(column)
    for org in orgs:
        table.add_row(org.id, org.name, org.parent_id or "-", org.created_at.strftime("%Y-%m-%d"))
    out.print(table)


@app.command("tree")
def tree() -> None:
    """Show the organizations as a tree."""
    with open_local_runtime() as runtime:
        orgs = runtime.app.organizations.tree(cli_principal())
    top = Tree("organizations")

    def add(node: Tree, org_id: str) -> None:
        org = orgs.get(org_id)
        branch = node.add(f"{org_id} ({org.name})" if org else org_id)
        for child in orgs.children(org_id):
            add(branch, child)

    for root in orgs.roots():
        add(top, root)
    out.print(top)
