"""``imprint devices ...``: the fleet, from the administrator's side.

A device is named by imprint's reference (the ``id`` column) or by its own device id;
``--owner`` picks between organizations that have a device of the same id.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
from imprint.provisioning.devices import Device, DeviceStatus

app = typer.Typer(
    help="List devices and act on them (approve, disable, revoke, reset).", no_args_is_help=True
)

DeviceRef = Annotated[
    str, typer.Argument(help="The device's id, or imprint's reference (the id column)")
]
OwnerOption = Annotated[
    str | None, typer.Option(help="The device's owner, when several have a device of this id")
]

COLUMNS = [
    Column("id", "id", key=True),
    Column("device id", "device_id", key=True),
    Column("owner", "owner"),
    Column("enrollment", "enrollment_id"),
    Column("status", "status"),
    Column("certificate", "certificate_serial", key=True),
]
FIELDS = [
    *COLUMNS,
    Column("mechanism", "mechanism"),
    Column("pinned fingerprint", "pinned_fingerprint"),
    Column("created", "created_at"),
    Column("updated", "updated_at"),
    Column("provisioned", "provisioned_at"),
]


def _attributes(item: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in (item.get("attributes") or {}).items()) or "-"


# ``devices show``: the fields, and what the provisioning hook added.
SHOW_FIELDS = [*FIELDS, Column("attributes", _attributes)]
STEP_COLUMNS = [
    Column("at", "at"),
    Column("request", "request_id", key=True),
    Column("step", "step"),
    Column("status", "status"),
    Column("code", "code"),
    Column("detail", "detail"),
]


def _json(device: Device) -> dict[str, Any]:
    from imprint.api.routes.devices import DeviceOut

    return DeviceOut.of(device).model_dump(mode="json")


def _path(device: str) -> str:
    from urllib.parse import quote

    return f"/api/v1/devices/{quote(device, safe='')}"


@app.command("list")
def list_devices(
    status: Annotated[DeviceStatus | None, typer.Option(help="Only this status")] = None,
    enrollment: Annotated[str | None, typer.Option(help="Only this enrollment")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner")] = None,
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List devices, a page at a time, with the total that match."""
    found = paged(
        lambda rt, principal, after: rt.app.devices.page(
            principal,
            owner=owner,
            enrollment_id=enrollment,
            status=status,
            limit=limit,
            after=after,
        ),
        "/api/v1/devices",
        item=_json,
        params={"status": status, "enrollment_id": enrollment, "owner": owner},
        paging=Paging(limit, cursor, every),
    )
    render_page(found, COLUMNS, output, noun="device(s)")


@app.command("show")
def show(device: DeviceRef, owner: OwnerOption = None, output: OutputOption = None) -> None:
    """A device, the attributes its organization's provisioning hook added, and its
    provisioning timeline."""

    def local(runtime: Any, principal: Any) -> dict[str, Any]:
        from imprint.api.routes.devices import StepOut

        found, steps = runtime.app.devices.show(principal, device, owner=owner)
        timeline = [StepOut.of(s).model_dump(mode="json") for s in steps]
        attributes = dict(runtime.app.devices.attributes(principal, found.id))
        return {**_json(found), "attributes": attributes, "timeline": timeline}

    detail = perform(local=local, remote=lambda api: api.get(_path(device), owner=owner))
    render_item(detail, output, fields=SHOW_FIELDS)
    if (output or default_format()) is not Format.table:
        return  # the timeline is in the object
    timeline = detail.get("timeline", [])
    render_page(
        {"items": timeline, "total": len(timeline), "next": None},
        STEP_COLUMNS,
        output,
        noun="step(s)",
    )


def _act(
    action: str, device: str, owner: str | None, output: Any, message: str, **body: Any
) -> None:
    def local(runtime: Any, principal: Any) -> dict[str, Any]:
        operation = getattr(runtime.app.devices, action)
        return _json(operation(principal, device, owner=owner, **body))

    def remote(api: Api) -> dict[str, Any]:
        payload = {"reason": body["reason"], "disable": body["disable"]} if body else None
        answer: dict[str, Any] = api.post(f"{_path(device)}/{action}", payload, owner=owner)
        return answer

    done = perform(local=local, remote=remote)
    render_done(done, output, message.format(**done), fields=FIELDS)


@app.command("approve")
def approve_command(
    device: DeviceRef, owner: OwnerOption = None, output: OutputOption = None
) -> None:
    """Approve a pending device; its next request with the same key is issued."""
    _act("approve", device, owner, output, "approved {device_id} ({owner}, {id})")


@app.command("disable")
def disable_command(
    device: DeviceRef, owner: OwnerOption = None, output: OutputOption = None
) -> None:
    """Refuse the device's provisioning and renewal (its certificate stays valid)."""
    _act("disable", device, owner, output, "disabled {device_id} ({owner}, {id})")


@app.command("enable")
def enable_command(
    device: DeviceRef, owner: OwnerOption = None, output: OutputOption = None
) -> None:
    """Allow a disabled device again."""
    _act("enable", device, owner, output, "enabled {device_id} ({status})")


@app.command("revoke")
def revoke_command(
    device: DeviceRef,
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason, e.g. keyCompromise")
    ] = "unspecified",
    keep_enabled: Annotated[bool, typer.Option(help="Do not disable the device")] = False,
    owner: OwnerOption = None,
    output: OutputOption = None,
) -> None:
    """Revoke every certificate the device holds (and disable it, unless --keep-enabled)."""
    _act(
        "revoke",
        device,
        owner,
        output,
        "revoked the certificates of {device_id}",
        reason=reason,
        disable=not keep_enabled,
    )


@app.command("reset")
def reset_command(
    device: DeviceRef, owner: OwnerOption = None, output: OutputOption = None
) -> None:
    """Factory reset: revoke, forget the key and pinned certificate, release the device."""
    _act("reset", device, owner, output, "released {device_id}; it may provision again")


@app.command("revoke-enrollment")
def revoke_enrollment_command(
    enrollment: Annotated[str, typer.Argument(help="Enrollment id")],
    reason: Annotated[str, typer.Option(help="RFC 5280 reason")] = "unspecified",
    output: OutputOption = None,
) -> None:
    """Disable an enrollment and revoke the certificates of all its devices."""
    from urllib.parse import quote

    def local(runtime: Any, principal: Any) -> dict[str, Any]:
        result = runtime.app.devices.revoke_enrollment(principal, enrollment, reason)
        return {
            "enrollment_id": result.enrollment_id,
            "devices": result.devices,
            "certificates_revoked": result.certificates_revoked,
        }

    done = perform(
        local=local,
        remote=lambda api: api.post(
            f"/api/v1/enrollments/{quote(enrollment, safe='')}/revoke", {"reason": reason}
        ),
    )
    render_done(
        done,
        output,
        f"enrollment {done['enrollment_id']} disabled; {done['certificates_revoked']} of "
        f"{done['devices']} device certificate(s) revoked",
    )
