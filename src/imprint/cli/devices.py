"""``imprint devices ...``: the fleet, from the administrator's side."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from imprint.cli import _runtime, out
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.tenancy.access import cli_principal

app = typer.Typer(
    help="List devices and act on them (approve, disable, revoke, reset).", no_args_is_help=True
)

DeviceRef = Annotated[str, typer.Argument(help="The device's reference (the id column of 'list')")]


def _row(device: Device) -> list[str]:
    return [
        device.id,
        device.device_id,
        device.owner,
        device.enrollment_id,
        device.status.value,
        device.certificate_serial or "-",
    ]


def _table(devices: list[Device], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "device id", "owner", "enrollment", "status", "certificate"):
        table.add_column(column)
    for device in devices:
        table.add_row(*_row(device))
    return table


@app.command("list")
def list_devices(
    status: Annotated[DeviceStatus | None, typer.Option(help="Only this status")] = None,
    enrollment: Annotated[str | None, typer.Option(help="Only this enrollment")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows")] = 100,
) -> None:
    """List devices as a table."""
    with _runtime() as runtime:
        found = list(
            runtime.app.devices.search(
                cli_principal(), owner=owner, enrollment_id=enrollment, status=status, limit=limit
            )
        )
    out.print(_table(found, f"{len(found)} device(s)"))


@app.command("show")
def show(device: DeviceRef) -> None:
    """A device and its provisioning timeline."""
    with _runtime() as runtime:
        found, steps = runtime.app.devices.show(cli_principal(), device)
    out.print(_table([found], found.device_id))
    timeline = Table(title="timeline")
    for column in ("at", "request", "step", "status", "code", "detail"):
        timeline.add_column(column)
    for step in steps:
        timeline.add_row(
            step.at.strftime("%Y-%m-%d %H:%M:%S"),
            step.request_id[:8],
            step.step.value,
            step.status,
            step.code or "",
            step.detail or "",
        )
    out.print(timeline)


@app.command("approve")
def approve_command(device: DeviceRef) -> None:
    """Approve a pending device; its next request with the same key is issued."""
    with _runtime() as runtime:
        approved = runtime.app.devices.approve(cli_principal(), device)
    out.print(f"approved {approved.device_id}")


@app.command("disable")
def disable_command(device: DeviceRef) -> None:
    """Refuse the device's provisioning and renewal (its certificate stays valid)."""
    with _runtime() as runtime:
        disabled = runtime.app.devices.disable(cli_principal(), device)
    out.print(f"disabled {disabled.device_id}")


@app.command("enable")
def enable_command(device: DeviceRef) -> None:
    """Allow a disabled device again."""
    with _runtime() as runtime:
        enabled = runtime.app.devices.enable(cli_principal(), device)
    out.print(f"enabled {enabled.device_id} ({enabled.status.value})")


@app.command("revoke")
def revoke_command(
    device: DeviceRef,
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise")
    ] = "unspecified",
    keep_enabled: Annotated[bool, typer.Option(help="Do not disable the device")] = False,
) -> None:
    """Revoke every certificate the device holds (and disable it, unless --keep-enabled)."""
    with _runtime() as runtime:
        revoked = runtime.app.devices.revoke(
            cli_principal(), device, reason, disable=not keep_enabled
        )
    out.print(f"revoked the certificates of {revoked.device_id}")


@app.command("reset")
def reset_command(device: DeviceRef) -> None:
    """Factory reset: revoke, forget the key and pinned certificate, release the device."""
    with _runtime() as runtime:
        released = runtime.app.devices.reset(cli_principal(), device)
    out.print(f"released {released.device_id}; it may provision again")


@app.command("revoke-enrollment")
def revoke_enrollment_command(
    enrollment: Annotated[str, typer.Argument(help="Enrollment id")],
    reason: Annotated[str, typer.Option(help="RFC 5280 reason")] = "unspecified",
) -> None:
    """Disable an enrollment and revoke the certificates of all its devices."""
    with _runtime() as runtime:
        result = runtime.app.devices.revoke_enrollment(cli_principal(), enrollment, reason)
    out.print(
        f"enrollment {result.enrollment_id} disabled; {result.certificates_revoked} of "
        f"{result.devices} device certificate(s) revoked"
    )
