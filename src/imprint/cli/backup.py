"""``imprint backup create|restore``: the data directory and a SQLite snapshot in one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imprint.backup import create_backup, restore_backup
from imprint.cli import _errors, _settings, err, out

app = typer.Typer(
    help="Back up the instance (data directory and SQLite database) or restore a backup.",
    no_args_is_help=True,
)


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="The backup to write (a new .tar.gz file)")],
) -> None:
    """Write a backup; safe while the server runs (SQLite is copied consistently)."""
    settings = _settings()
    with _errors():
        report = create_backup(settings, file)
    database = (
        f"SQLite snapshot at revision {report.revision}"
        if report.database == "sqlite"
        else "no database: PostgreSQL is backed up with pg_dump"
    )
    out.print(
        f"backup written: {file} ({report.files} files, {_megabytes(report.size)}; {database})"
    )
    for item in report.not_included:
        err.print(f"not in the backup, keep it with it: {item}")
    if report.not_included:
        err.print("Keep the file as safe as the data directory: it holds the encrypted CA keys.")
    else:
        err.print("The file holds the CA keys and what unlocks them: keep it safe (mode 0600).")


@app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="A file written by imprint backup create")],
) -> None:
    """Restore a backup into the configured data directory, which must be new or empty."""
    settings = _settings()
    with _errors():
        report = restore_backup(settings, file)
    out.print(
        f"restored {report.files} files from the backup of {report.created_at} "
        f"into {report.data_dir}"
    )
    if report.database_path is not None:
        out.print(f"SQLite database at revision {report.revision}: {report.database_path}")
    else:
        out.print(
            f"the database was PostgreSQL (revision {report.revision}): restore it from "
            "its pg_dump before imprint serve"
        )
