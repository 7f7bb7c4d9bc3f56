"""``imprint regkey ...``: an enrollment's registration key (create, rotate, show)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from imprint.cli import _runtime, err, out
from imprint.provisioning.registration_keys import DEFAULT_HALF_LENGTH, RegistrationKey
from imprint.tenancy.access import cli_principal

app = typer.Typer(
    help="Manage registration keys: the key an owner types into devices.", no_args_is_help=True
)

EnrollmentArg = Annotated[str, typer.Argument(help="Enrollment id (mechanism registration-key)")]
HalfLength = Annotated[int, typer.Option(help="Characters per half of a generated key (8 to 32)")]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="Install this key (e.g. from midPoint) instead of generating one"),
]


def _print_once(enrollment_id: str, key: RegistrationKey) -> None:
    err.print(f"registration key of {enrollment_id} (shown once; type it into the devices):")
    sys.stdout.write(key.key + "\n")


@app.command("create")
def create(
    enrollment_id: EnrollmentArg,
    key: KeyOption = None,
    half_length: HalfLength = DEFAULT_HALF_LENGTH,
) -> None:
    """Give an enrollment its first registration key and print it once."""
    with _runtime() as runtime:
        made = runtime.app.registration_keys.create(
            cli_principal(), enrollment_id, key=key, half_length=half_length
        )
    _print_once(enrollment_id, made)


@app.command("rotate")
def rotate(
    enrollment_id: EnrollmentArg,
    transition: Annotated[
        str, typer.Option(help="How long the old key keeps working, e.g. 7d, 12h or 0s")
    ] = "7d",
    key: KeyOption = None,
    half_length: HalfLength = DEFAULT_HALF_LENGTH,
) -> None:
    """Replace the registration key; the old one works for the transition, then stops."""
    with _runtime() as runtime:
        rotation = runtime.app.registration_keys.rotate(
            cli_principal(),
            enrollment_id,
            transition=transition,
            key=key,
            half_length=half_length,
            require_current=True,
        )
    _print_once(enrollment_id, rotation.current)
    if rotation.previous is not None and rotation.previous.expires_at is not None:
        until = rotation.previous.expires_at.strftime("%Y-%m-%d %H:%M:%S")
        err.print(f"the previous key ({rotation.previous.first_half}-...) works until {until} UTC")


@app.command("show")
def show(enrollment_id: EnrollmentArg) -> None:
    """Show the enrollment's keys: first half, state and expiry (never the second half)."""
    with _runtime() as runtime:
        keys = runtime.app.registration_keys.show(cli_principal(), enrollment_id)
        now = runtime.clock.now()
    table = Table(title=f"registration keys of {enrollment_id}")
    for column in ("first half", "state", "active", "created", "expires"):
        table.add_column(column)
    for item in keys:
        table.add_row(
            item.first_half,
            item.state.value,
            "yes" if item.is_active(now) else "no",
            item.created_at.strftime("%Y-%m-%d %H:%M"),
            item.expires_at.strftime("%Y-%m-%d %H:%M:%S") if item.expires_at else "-",
        )
    out.print(table)
