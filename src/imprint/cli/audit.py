"""``imprint audit verify|export``: check the audit log's hash chain, or copy the log
out as JSON lines (oldest first, each entry with its hashes) to keep or check elsewhere.

Both need the whole instance: locally the data directory, remotely an API key."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from imprint.audit import REASONS
from imprint.cli import _fail, err
from imprint.cli.calls import Api, perform
from imprint.cli.output import Column, Format, OutputOption, default_format, render_item
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(help="Verify or export the audit log.", no_args_is_help=True)


@app.command("verify")
def verify(output: OutputOption = None) -> None:
    """Check every entry against the one before it and its own hash (exit 1 when one
    does not hold); prints the head hash to keep elsewhere as an anchor."""
    from imprint.api.routes.audit import ChainReportOut

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        report = runtime.app.audit.verify(principal)
        return ChainReportOut.of(report).model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        answer: dict[str, Any] = api.get("/api/v1/audit/verify")
        return answer

    report = perform(local=local, remote=remote)
    broken = report.get("broken")
    if (output or default_format()) is not Format.table:
        render_item(report, output, fields=[Column(k, k) for k in report])
        if broken:
            raise typer.Exit(1)
        return
    if broken:
        reason = broken["reason"]
        _fail(f"audit log broken at entry {broken['id']}: {REASONS.get(reason, reason)} ({reason})")
    typer.echo(f"audit log verified: {report['entries']} entries, head {report['head']}")


def _write(lines: Iterable[str], stream: TextIO) -> int:
    count = 0
    for line in lines:
        if line:
            stream.write(line + "\n")
            count += 1
    return count


@app.command("export")
def export(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Write every entry as one JSON object a line, oldest first, with ``prev_hash`` and
    ``hash``; read a page at a time, so the size of the log does not matter."""

    def local(runtime: Runtime, principal: Principal) -> int:
        lines = (json.dumps(asdict(r)) for r in runtime.app.audit.export(principal))
        return _to(lines, out_file)

    count = perform(
        local=local, remote=lambda api: _to(api.lines("/api/v1/audit/export"), out_file)
    )
    err.print(f"exported {count} entries")


def _to(lines: Iterable[str], out_file: Path | None) -> int:
    if out_file is None:
        return _write(lines, sys.stdout)
    try:
        with out_file.open("w", encoding="ascii") as stream:
            return _write(lines, stream)
    except OSError as exc:
        _fail(f"cannot write {out_file}: {exc.strerror}")
