"""``imprint oob ...``: register out-of-band secrets for oob-secret enrollments."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imprint.cli import _errors, _fail, _runtime, err, out, read_secret
from imprint.cli.calls import Api, all_pages, perform
from imprint.cli.output import Column, OutputOption, render_page
from imprint.provisioning.oob_secrets import (
    ImportReport,
    RawRow,
    RowsInvalid,
    parse_csv,
    parse_json,
)
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, cli_principal

app = typer.Typer(
    help="Register out-of-band secrets: device id + secret, one by one or from a file.",
    no_args_is_help=True,
)

_SHOWN_PROBLEMS = 50


@app.command("add")
def add(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    device_id: Annotated[str, typer.Argument(help="The registration id the device sends")],
    secret: Annotated[
        str | None,
        typer.Option(
            help="8 to 256 characters (asked for when left out, or read from standard input)"
        ),
    ] = None,
    valid_until: Annotated[
        str | None, typer.Option(help="ISO 8601, e.g. 2030-01-31T12:00:00Z; default +3 days")
    ] = None,
) -> None:
    """Register one device's secret (idempotent)."""
    if secret is None:
        secret = read_secret("Secret")
    with _runtime() as runtime:
        result, summary = runtime.app.oob_secrets.register(
            cli_principal(), enrollment_id, device_id, secret, valid_until
        )
    until = summary.valid_until.strftime("%Y-%m-%d %H:%M")
    out.print(f"{device_id}: {result.value}, valid until {until} UTC")


@app.command("otp")
def one_time_password(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    device_id: Annotated[str, typer.Argument(help="The device id (EST username)")],
    valid_minutes: Annotated[
        int, typer.Option(min=1, max=43200, help="How long it may be used")
    ] = 1440,
) -> None:
    """Make a one-time password for EST's HTTP Basic; it is printed this once."""
    with _runtime() as runtime:
        password, record = runtime.app.oob_secrets.create_one_time_password(
            cli_principal(), enrollment_id, device_id, timedelta(minutes=valid_minutes)
        )
    until = record.expires_at.strftime("%Y-%m-%d %H:%M")
    err.print(f"{device_id}: one-time password, valid until {until} UTC (shown once)")
    out.print(password, highlight=False, soft_wrap=True)


def _rows(path: Path) -> Iterable[RawRow]:
    """The file's rows: a CSV file is read as it is checked, line by line; a JSON file
    (``.json``, or text that starts with ``[``) is read whole."""
    try:
        with path.open(encoding="utf-8-sig") as peek:
            start = peek.read(4096).lstrip()
        if path.suffix.lower() == ".json" or start.startswith("["):
            text = path.read_text(encoding="utf-8-sig")
        else:
            return _csv_rows(path)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")
    with _errors():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            _fail(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})")
        return parse_json(data)


def _csv_rows(path: Path) -> Iterator[RawRow]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as lines:
            yield from parse_csv(lines)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")


def _print_report(report: ImportReport) -> None:
    verb = "would be " if report.dry_run else ""
    out.print(
        f"{report.rows} row(s): {report.created} {verb}created, {report.updated} {verb}updated, "
        f"{report.unchanged} unchanged, {len(report.problems)} invalid"
    )
    if not report.problems:
        return
    table = Table(title="invalid rows (nothing was written)" if not report.dry_run else None)
    for column in ("line", "device id", "field", "problem"):
        table.add_column(column)
    for problem in report.problems[:_SHOWN_PROBLEMS]:
        table.add_row(
            str(problem.line), problem.device_id or "", problem.field or "", problem.message
        )
    err.print(table)
    if len(report.problems) > _SHOWN_PROBLEMS:
        err.print(f"... and {len(report.problems) - _SHOWN_PROBLEMS} more")


@app.command("import")
def import_file(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV with the header device_id,secret[,valid_until], or a JSON list of "
            "objects with those fields"
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Report what would change; write nothing")] = False,
) -> None:
    """Register many secrets: every row is checked first; one bad row and nothing is written."""
    rows = _rows(file)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with _runtime() as runtime:
        with Progress(*columns, console=err, transient=True) as progress:
            tasks = {
                "check": progress.add_task("checking", total=None),
                "write": progress.add_task("writing", total=None, visible=False),
            }

            def advance(phase: str, done: int, total: int) -> None:
                progress.update(tasks[phase], completed=done, total=total, visible=True)

            try:
                report = runtime.app.oob_secrets.import_secrets(
                    cli_principal(), enrollment_id, rows, dry_run=dry_run, progress=advance
                )
            except RowsInvalid as exc:
                report = exc.report
        _print_report(report)
    if report.problems and not report.dry_run:
        raise typer.Exit(1)


@app.command("list")
def list_secrets(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    limit: Annotated[int, typer.Option(help="At most this many a page (1 to 1000)")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Start at this page (a list's next)")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page from here")] = False,
    output: OutputOption = None,
) -> None:
    """List registered secrets (never the secrets themselves), with how many there are."""
    from urllib.parse import quote

    from imprint.api.routes.oob_secrets import SecretOut

    if not 1 <= limit <= 1000:
        _fail("--limit: 1 to 1000", 2)

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        def page(after: str | None) -> dict[str, Any]:
            found = runtime.app.oob_secrets.page(principal, enrollment_id, limit=limit, after=after)
            items = [SecretOut.of(s).model_dump(mode="json") for s in found.items]
            return {"items": items, "total": found.total, "next": found.next}

        return all_pages(page, cursor, every)

    def remote(api: Api) -> dict[str, Any]:
        path = f"/api/v1/enrollments/{quote(enrollment_id, safe='')}/oob-secrets"

        def page(after: str | None) -> dict[str, Any]:
            answer: dict[str, Any] = api.get(path, limit=limit, after=after)
            return answer

        return all_pages(page, cursor, every)

    columns = [
        Column("device id", "device_id", key=True),
        Column("valid until", "valid_until"),
        Column("used", "used_at"),
        Column("registered", "created_at"),
    ]
    found = perform(local=local, remote=remote)
    render_page(found, columns, output, noun=f"secret(s) in {enrollment_id}")


@app.command("remove")
def remove(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    device_id: Annotated[str, typer.Argument(help="The device whose secret goes")],
) -> None:
    """Remove a device's secret; the device waits again until a new one is registered."""
    with _runtime() as runtime:
        runtime.app.oob_secrets.remove(cli_principal(), enrollment_id, device_id)
    out.print(f"secret of {device_id} removed")
