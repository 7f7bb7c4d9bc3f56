"""``imprint oob ...``: register out-of-band secrets for oob-secret enrollments."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imprint.cli import _errors, _fail, err, read_secret
from imprint.cli.calls import AllOption, Api, CursorOption, LimitOption, Paging, paged, perform
from imprint.cli.output import (
    Column,
    Format,
    OutputOption,
    default_format,
    render_done,
    render_item,
    render_page,
)
from imprint.provisioning.oob_secrets import RawRow, RowsInvalid, parse_csv, parse_json
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Register out-of-band secrets: device id + secret, one by one or from a file.",
    no_args_is_help=True,
)

_SHOWN_PROBLEMS = 50
#: Rows a remote import sends in one request: big enough to be quick, small enough
#: that no request holds the server long or grows past its upload limit.
BATCH_ROWS = 2000
_DUPLICATE = re.compile(r"device id already on line (\d+)")

SECRET_COLUMNS = [
    Column("device id", "device_id", key=True),
    Column("valid until", "valid_until"),
    Column("used", "used_at"),
    Column("registered", "created_at"),
]


def _enrollment(enrollment_id: str) -> str:
    return f"/api/v1/enrollments/{quote(enrollment_id, safe='')}"


def _minute(instant: Any) -> str:
    return str(instant).replace("T", " ")[:16]


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
    output: OutputOption = None,
) -> None:
    """Register one device's secret (idempotent)."""
    from imprint.api.routes.oob_secrets import RegisteredSecret, SecretOut

    if secret is None:
        secret = read_secret("Secret")
    given = secret

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        result, summary = runtime.app.oob_secrets.register(
            principal, enrollment_id, device_id, given, valid_until
        )
        made = RegisteredSecret(**SecretOut.of(summary).model_dump(), result=result)
        return made.model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        body = {"device_id": device_id, "secret": given, "valid_until": valid_until}
        answer: dict[str, Any] = api.post(f"{_enrollment(enrollment_id)}/oob-secrets", body)
        return answer

    made = perform(local=local, remote=remote)
    render_done(
        made,
        output,
        f"{device_id}: {made['result']}, valid until {_minute(made['valid_until'])} UTC",
        fields=[*SECRET_COLUMNS, Column("result", "result")],
    )


@app.command("otp")
def one_time_password(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    device_id: Annotated[str, typer.Argument(help="The device id (EST username)")],
    valid_minutes: Annotated[
        int, typer.Option(min=1, max=43200, help="How long it may be used")
    ] = 1440,
    output: OutputOption = None,
) -> None:
    """Make a one-time password for EST's HTTP Basic; it is printed this once."""
    from imprint.api.routes.oob_secrets import OneTimePasswordOut

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        password, record = runtime.app.oob_secrets.create_one_time_password(
            principal, enrollment_id, device_id, timedelta(minutes=valid_minutes)
        )
        made = OneTimePasswordOut(
            id=record.id,
            enrollment_id=record.enrollment_id,
            device_id=record.device_id,
            password=password,
            expires_at=record.expires_at,
        )
        return made.model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        body = {"device_id": device_id, "valid_minutes": valid_minutes}
        answer: dict[str, Any] = api.post(f"{_enrollment(enrollment_id)}/one-time-passwords", body)
        return answer

    made = perform(local=local, remote=remote)
    if (output or default_format()) is not Format.table:
        render_item(made, output, fields=[Column(k, k) for k in made])
        return
    until = _minute(made["expires_at"])
    err.print(f"{device_id}: one-time password, valid until {until} UTC (shown once)")
    typer.echo(made["password"])


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


def _until(rows: Iterable[RawRow], valid_until: str) -> Iterator[RawRow]:
    """The rows, each without its own ``valid_until`` given ``valid_until``."""
    for row in rows:
        if row.values.get("valid_until") in (None, ""):
            yield RawRow(row.line, {**row.values, "valid_until": valid_until})
        else:
            yield row


def _csv_rows(path: Path) -> Iterator[RawRow]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as lines, _errors():
            yield from parse_csv(lines)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")


def _print_report(report: dict[str, Any], output: Format | None) -> None:
    fmt = output or default_format()
    if fmt is not Format.table:
        render_item(report, fmt, fields=[Column(k, k) for k in report])
        return
    verb = "would be " if report["dry_run"] else ""
    problems = report["invalid"]
    typer.echo(
        f"{report['rows']} row(s): {report['created']} {verb}created, "
        f"{report['updated']} {verb}updated, {report['unchanged']} unchanged, "
        f"{len(problems)} invalid"
    )
    if not problems:
        return
    if not report["dry_run"]:
        err.print(
            "invalid rows (the valid rows were written):"
            if report["written"] or report["created"] or report["updated"] or report["unchanged"]
            else "invalid rows (nothing was written):"
        )
    shown = [
        {**p, "field": p.get("field") or "", "device_id": p.get("device_id") or ""}
        for p in problems
    ]
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("line", "device id", "field", "problem"):
        table.add_column(column)
    for problem in shown[:_SHOWN_PROBLEMS]:
        table.add_row(
            str(problem["line"]), problem["device_id"], problem["field"], problem["message"]
        )
    Console(stderr=True, highlight=False, emoji=False, soft_wrap=True).print(table)
    if len(problems) > _SHOWN_PROBLEMS:
        err.print(f"... and {len(problems) - _SHOWN_PROBLEMS} more")


def _batches(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    batch: list[RawRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _RemoteImport:
    """An import through the REST API, a batch of rows a request.

    Each batch goes to ``oob-secrets:bulk``, which checks its rows exactly as a local
    import does; a device id already accepted in an earlier batch is refused here with
    the same message the server gives within one batch, so the report is the one a
    local import of the whole file gives. Lines are the file's.
    """

    def __init__(
        self, api: Api, enrollment_id: str, advance: Callable[[str, int, int | None], None]
    ) -> None:
        self._api = api
        self._path = f"{_enrollment(enrollment_id)}/oob-secrets:bulk"
        self._advance = advance
        self.enrollment_id = enrollment_id

    def run(
        self, rows: Iterable[RawRow], *, dry_run: bool, partial: bool, phase: str, total: int | None
    ) -> dict[str, Any]:
        counts = {"rows": 0, "created": 0, "updated": 0, "unchanged": 0}
        problems: list[dict[str, Any]] = []
        written = False
        seen: dict[str, int] = {}
        done = 0
        for batch in _batches(rows, BATCH_ROWS):
            outgoing: list[dict[str, Any]] = []
            lines: list[int] = []
            for row in batch:
                device_id = row.values.get("device_id")
                if isinstance(device_id, str) and device_id in seen:
                    counts["rows"] += 1
                    problems.append(
                        {
                            "line": row.line,
                            "field": "device_id",
                            "device_id": device_id,
                            "message": f"device id already on line {seen[device_id]}",
                        }
                    )
                    continue
                outgoing.append(dict(row.values))
                lines.append(row.line)
            if outgoing:
                answer = self._api.post(self._path, outgoing, dry_run=dry_run, skip_invalid=partial)
                for key in counts:
                    counts[key] += int(answer[key])
                written = written or bool(answer.get("written"))
                bad: set[int] = set()
                for problem in answer.get("invalid", []):
                    index = int(problem["line"])
                    bad.add(index)
                    message = str(problem["message"])
                    duplicate = _DUPLICATE.fullmatch(message)
                    if duplicate:
                        message = f"device id already on line {lines[int(duplicate[1]) - 1]}"
                    problems.append({**problem, "line": lines[index - 1], "message": message})
                for index, line in enumerate(lines, start=1):
                    device_id = outgoing[index - 1].get("device_id")
                    if index not in bad and isinstance(device_id, str):
                        seen.setdefault(device_id, line)
            done += len(batch)
            self._advance(phase, done, total)
        problems.sort(key=lambda p: int(p["line"]))
        return {
            "enrollment_id": self.enrollment_id,
            **counts,
            "invalid": problems,
            "dry_run": dry_run,
            "written": written,
        }


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
    dry_run: Annotated[
        bool, typer.Option(help="Report what would change; write nothing (exit 1 on bad rows)")
    ] = False,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Write the valid rows and report the invalid ones (exit 1 when there are)",
        ),
    ] = False,
    valid_until: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 expiry for the rows without their own valid_until "
            "(default 3 days from now, at most 365)"
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Register many secrets: every row is checked first; one bad row and nothing is
    written, unless --skip-invalid writes the valid ones.

    Exits 1 when a row is invalid, with --dry-run and --skip-invalid too. Against a
    server, the rows go in batches of 2,000, checked all before any is written.
    """
    from imprint.api.routes.oob_secrets import ImportOut

    def read() -> Iterable[RawRow]:
        rows = _rows(file)
        return rows if valid_until is None else _until(rows, valid_until)

    with _errors():  # a file that cannot be read or parsed fails here, before anything is sent
        next(iter(read()), None)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        tasks = {
            "check": progress.add_task("checking", total=None),
            "write": progress.add_task("writing", total=None, visible=False),
        }

        def advance(phase: str, done: int, total: int | None) -> None:
            progress.update(tasks[phase], completed=done, total=total, visible=True)

        def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
            try:
                report = runtime.app.oob_secrets.import_secrets(
                    principal,
                    enrollment_id,
                    read(),
                    dry_run=dry_run,
                    skip_invalid=skip_invalid,
                    progress=advance,
                )
            except RowsInvalid as exc:
                report = exc.report
            return ImportOut.of(report).model_dump(mode="json")

        def remote(api: Api) -> dict[str, Any]:
            job = _RemoteImport(api, enrollment_id, advance)
            if dry_run or skip_invalid:
                phase = "check" if dry_run else "write"
                return job.run(
                    read(), dry_run=dry_run, partial=skip_invalid, phase=phase, total=None
                )
            checked = job.run(read(), dry_run=True, partial=False, phase="check", total=None)
            if checked["invalid"]:
                return {**checked, "dry_run": False, "created": 0, "updated": 0, "unchanged": 0}
            return job.run(
                read(), dry_run=False, partial=False, phase="write", total=checked["rows"]
            )

        report = perform(local=local, remote=remote)
    _print_report(report, output)
    if report["invalid"]:
        raise typer.Exit(1)


@app.command("list")
def list_secrets(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List registered secrets (never the secrets themselves), with how many there are."""
    from imprint.api.routes.oob_secrets import SecretOut

    found = paged(
        lambda rt, principal, after: rt.app.oob_secrets.page(
            principal, enrollment_id, limit=limit, after=after
        ),
        f"{_enrollment(enrollment_id)}/oob-secrets",
        item=lambda s: SecretOut.of(s).model_dump(mode="json"),
        paging=Paging(limit, cursor, every),
    )
    render_page(found, SECRET_COLUMNS, output, noun=f"secret(s) in {enrollment_id}")


@app.command("remove")
def remove(
    enrollment_id: Annotated[str, typer.Argument(help="An oob-secret enrollment")],
    device_id: Annotated[str, typer.Argument(help="The device whose secret goes")],
    output: OutputOption = None,
) -> None:
    """Remove a device's secret; the device waits again until a new one is registered."""
    perform(
        local=lambda rt, p: rt.app.oob_secrets.remove(p, enrollment_id, device_id),
        remote=lambda api: api.delete(
            f"{_enrollment(enrollment_id)}/oob-secrets/{quote(device_id, safe='')}"
        ),
    )
    render_done(
        {"enrollment_id": enrollment_id, "device_id": device_id, "removed": True},
        output,
        f"secret of {device_id} removed",
    )
