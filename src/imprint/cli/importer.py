"""``imprint import ...``: take over configuration written for other systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from imprint.cli import _fail, err
from imprint.cli.calls import Api, perform
from imprint.cli.output import Column, Format, OutputOption, default_format, render_item
from imprint.compat.plgd import read_values
from imprint.errors import InvalidValue
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(help="Import configuration written for other systems.", no_args_is_help=True)


@app.command("plgd-values")
def plgd_values(
    file: Annotated[Path, typer.Argument(help="plgd hub/DPS Helm values YAML")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and show what would change, store nothing")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Create the OAuth clients (mockoauthserver.oauth) and enrollment groups
    (deviceProvisioningService.enrollmentGroups) of a plgd values file.

    Each hub provider's client id and secret are checked first (against the file's
    clients and those imprint knows); a wrong one stores nothing and exits 1. Running it
    again updates what changed in the file and leaves the rest alone.
    """
    from imprint.api.routes.imports import PlgdImportOut

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    try:
        values = read_values(text)  # checked here first, also before a remote import
    except InvalidValue as exc:
        _fail(f"{file}: {exc.message}")

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        imported = runtime.app.imports.plgd_values(
            principal, values, source=str(file), dry_run=dry_run
        )
        shown = PlgdImportOut.of(
            values.owner_claim, runtime.settings.auth.owner_claim, imported, dry_run=dry_run
        )
        return shown.model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        body = {"values": text, "source": str(file), "dry_run": dry_run}
        answer: dict[str, Any] = api.post("/api/v1/imports/plgd-values", body)
        return answer

    result = perform(local=local, remote=remote)
    if (output or default_format()) is not Format.table:
        render_item(result, output, fields=[Column(k, k) for k in result])
        return
    claim = result["owner_claim"]
    ours = claim["server"]
    if claim["file"] is None:
        typer.echo(f"owner claim: the file names none; imprint uses {ours}")
    elif claim["agree"]:
        typer.echo(f"owner claim: {ours} (global.ownerClaim and auth.owner_claim agree)")
    else:
        err.print(
            f"[bold yellow]warning:[/] global.ownerClaim is {claim['file']} but "
            f"imprint's auth.owner_claim is {ours}: hub tokens would carry the owner "
            f"in {ours}. Set `auth: {{owner_claim: {claim['file']}}}` in imprint.yaml "
            f"or IMPRINT_AUTH__OWNER_CLAIM={claim['file']}, then restart imprint."
        )
    for note in result["notes"]:
        typer.echo(f"note: {note}")
    for action in result["actions"]:
        label = "oauth client" if action["kind"] == "client" else "enrollment"
        outcome = action["result"]
        if dry_run and outcome in ("created", "updated"):
            outcome = f"would be {outcome}"
        tail = f" ({action['detail']})" if action["detail"] else ""
        typer.echo(f"{label} {action['target']}: {outcome}{tail}")
