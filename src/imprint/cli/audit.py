"""``imprint audit verify|export``: check the audit log's hash chain, or copy the log
out as JSON lines (oldest first, each entry with its hashes) to keep or check elsewhere."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, TextIO

import typer

from imprint.audit import REASONS, AuditRecord
from imprint.cli import _fail, _runtime, err, out
from imprint.tenancy.access import cli_principal

app = typer.Typer(help="Verify or export the audit log.", no_args_is_help=True)


@app.command("verify")
def verify() -> None:
    """Check every entry against the one before it and its own hash (exit 1 when one
    does not hold); prints the head hash to keep elsewhere as an anchor."""
    with _runtime() as runtime:
        report = runtime.app.audit.verify(cli_principal())
    if report.broken is not None:
        broken = report.broken
        _fail(f"audit log broken at entry {broken.id}: {REASONS[broken.reason]} ({broken.reason})")
    out.print(f"audit log verified: {report.entries} entries, head {report.head}")


def _write(entries: Iterable[AuditRecord], stream: TextIO) -> int:
    count = 0
    for record in entries:
        stream.write(json.dumps(asdict(record)) + "\n")
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
    with _runtime() as runtime:
        if out_file is None:
            count = _write(runtime.app.audit.export(cli_principal()), sys.stdout)
        else:
            try:
                with out_file.open("w", encoding="ascii") as stream:
                    count = _write(runtime.app.audit.export(cli_principal()), stream)
            except OSError as exc:
                _fail(f"cannot write {out_file}: {exc.strerror}")
    err.print(f"exported {count} entries")
