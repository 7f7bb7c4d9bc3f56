"""``imprint audit verify|export``: check the audit log's hash chain, or copy the log
out as JSON lines (oldest first, each entry with its hashes) to keep or check elsewhere."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, TextIO

import typer

from imprint.audit import REASONS, AuditLog, records, verify_chain
from imprint.cli import _fail, _runtime, err, out

app = typer.Typer(help="Verify or export the audit log.", no_args_is_help=True)


@app.command("verify")
def verify() -> None:
    """Check every entry against the one before it and its own hash (exit 1 when one
    does not hold); prints the head hash to keep elsewhere as an anchor."""
    with _runtime() as runtime:
        report = verify_chain(runtime.audit)
    if report.broken is not None:
        broken = report.broken
        _fail(f"audit log broken at entry {broken.id}: {REASONS[broken.reason]} ({broken.reason})")
    out.print(f"audit log verified: {report.entries} entries, head {report.head}")


def _write(log: AuditLog, stream: TextIO) -> int:
    count = 0
    for record in records(log):
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
            count = _write(runtime.audit, sys.stdout)
        else:
            try:
                with out_file.open("w", encoding="ascii") as stream:
                    count = _write(runtime.audit, stream)
            except OSError as exc:
                _fail(f"cannot write {out_file}: {exc.strerror}")
    err.print(f"exported {count} entries")
