"""``imprint import ...``: take over configuration written for other systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imprint.cli import _fail, _runtime, err, out
from imprint.compat.plgd import read_values
from imprint.errors import InvalidValue
from imprint.tenancy.access import cli_principal

app = typer.Typer(help="Import configuration written for other systems.", no_args_is_help=True)


@app.command("plgd-values")
def plgd_values(
    file: Annotated[Path, typer.Argument(help="plgd hub/DPS Helm values YAML")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and show what would change, store nothing")
    ] = False,
) -> None:
    """Create the OAuth clients (mockoauthserver.oauth) and enrollment groups
    (deviceProvisioningService.enrollmentGroups) of a plgd values file.

    Each hub provider's client id and secret are checked first (against the file's
    clients and those imprint knows); a wrong one stores nothing and exits 1. Running it
    again updates what changed in the file and leaves the rest alone.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    try:
        values = read_values(text)
    except InvalidValue as exc:
        _fail(f"{file}: {exc.message}")
    with _runtime() as runtime:
        ours = runtime.settings.auth.owner_claim
        if values.owner_claim is None:
            out.print(f"owner claim: the file names none; imprint uses {ours}")
        elif values.owner_claim == ours:
            out.print(f"owner claim: {ours} (global.ownerClaim and auth.owner_claim agree)")
        else:
            err.print(
                f"[bold yellow]warning:[/] global.ownerClaim is {values.owner_claim} but "
                f"imprint's auth.owner_claim is {ours}: hub tokens would carry the owner "
                f"in {ours}. Set `auth: {{owner_claim: {values.owner_claim}}}` in imprint.yaml "
                f"or IMPRINT_AUTH__OWNER_CLAIM={values.owner_claim}, then restart imprint."
            )
        imported = runtime.app.imports.plgd_values(
            cli_principal(), values, source=str(file), dry_run=dry_run
        )
    for note in imported.notes:
        out.print(f"note: {note}")
    prefix = "would be " if dry_run else ""
    for action in imported.actions:
        line = str(action)
        if dry_run and action.result in ("created", "updated"):
            line = line.replace(f": {action.result}", f": {prefix}{action.result}", 1)
        out.print(line)
