"""``imprint regkey ...``: an enrollment's registration key (create, rotate, show)."""

from __future__ import annotations

import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from imprint.cli import err
from imprint.cli.calls import Api, perform
from imprint.cli.output import (
    Column,
    Format,
    OutputOption,
    default_format,
    render_item,
    render_page,
)
from imprint.provisioning.registration_keys import DEFAULT_HALF_LENGTH
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Manage registration keys: the key an owner types into devices.", no_args_is_help=True
)

EnrollmentArg = Annotated[str, typer.Argument(help="Enrollment id (mechanism registration-key)")]
HalfLength = Annotated[int, typer.Option(help="Characters per half of a generated key (8 to 32)")]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="Install this key (e.g. from midPoint) instead of generating one"),
]

KEY_COLUMNS = [
    Column("first half", "first_half", key=True),
    Column("state", "state"),
    Column("active", "active"),
    Column("created", "created_at"),
    Column("expires", "expires_at"),
]


def _path(enrollment_id: str) -> str:
    return f"/api/v1/enrollments/{quote(enrollment_id, safe='')}/registration-key"


def _print_once(issued: dict[str, Any], output: Format | None) -> None:
    if (output or default_format()) is not Format.table:
        render_item(issued, output, fields=[Column(k, k) for k in issued])
        return
    err.print(
        f"registration key of {issued['enrollment_id']} (shown once; type it into the devices):"
    )
    sys.stdout.write(f"{issued['key']}\n")


def _issue(
    enrollment_id: str,
    *,
    key: str | None,
    half_length: int,
    transition: str | None,
    require_current: bool,
) -> dict[str, Any]:
    from imprint.api.routes.registration_keys import IssuedRegistrationKey

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        operations = runtime.app.registration_keys
        if not require_current:
            made = operations.create(principal, enrollment_id, key=key, half_length=half_length)
            return IssuedRegistrationKey.of(enrollment_id, made, None).model_dump(mode="json")
        rotation = operations.rotate(
            principal,
            enrollment_id,
            transition=transition,
            key=key,
            half_length=half_length,
            require_current=True,
        )
        issued = IssuedRegistrationKey.of(enrollment_id, rotation.current, rotation.previous)
        return issued.model_dump(mode="json")

    def remote(api: Api) -> dict[str, Any]:
        body = {
            "key": key,
            "half_length": half_length,
            "transition": transition,
            "require_current": require_current,
        }
        answer: dict[str, Any] = api.post(_path(enrollment_id), body)
        return answer

    return perform(local=local, remote=remote)


@app.command("create")
def create(
    enrollment_id: EnrollmentArg,
    key: KeyOption = None,
    half_length: HalfLength = DEFAULT_HALF_LENGTH,
    output: OutputOption = None,
) -> None:
    """Give an enrollment its first registration key and print it once."""
    issued = _issue(
        enrollment_id, key=key, half_length=half_length, transition=None, require_current=False
    )
    _print_once(issued, output)


@app.command("rotate")
def rotate(
    enrollment_id: EnrollmentArg,
    transition: Annotated[
        str, typer.Option(help="How long the old key keeps working, e.g. 7d, 12h or 0s")
    ] = "7d",
    key: KeyOption = None,
    half_length: HalfLength = DEFAULT_HALF_LENGTH,
    output: OutputOption = None,
) -> None:
    """Replace the registration key; the old one works for the transition, then stops."""
    issued = _issue(
        enrollment_id,
        key=key,
        half_length=half_length,
        transition=transition,
        require_current=True,
    )
    _print_once(issued, output)
    previous = issued.get("previous")
    if (output or default_format()) is Format.table and previous and previous.get("expires_at"):
        until = str(previous["expires_at"]).replace("T", " ")[:19]
        err.print(f"the previous key ({previous['first_half']}-...) works until {until} UTC")


@app.command("show")
def show(enrollment_id: EnrollmentArg, output: OutputOption = None) -> None:
    """Show the enrollment's keys: first half, state and expiry (never the second half)."""
    from imprint.api.routes.registration_keys import RegistrationKeyOut

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        keys = runtime.app.registration_keys.show(principal, enrollment_id)
        now = runtime.clock.now()
        return {"keys": [RegistrationKeyOut.of(k, now).model_dump(mode="json") for k in keys]}

    def remote(api: Api) -> dict[str, Any]:
        answer: dict[str, Any] = api.get(_path(enrollment_id))
        return answer

    keys = perform(local=local, remote=remote)["keys"]
    render_page(
        {"items": keys, "total": len(keys), "next": None},
        KEY_COLUMNS,
        output,
        noun=f"registration key(s) of {enrollment_id}",
    )
