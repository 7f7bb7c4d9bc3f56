"""``imprint enrollment ...``: manage enrollment groups and individual enrollments."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from imprint.cli import _fail, _runtime, out
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
)
from imprint.provisioning.specs import EnrollmentPatch, EnrollmentSpec, HubView
from imprint.tenancy.access import cli_principal

app = typer.Typer(
    help="Manage enrollments: who may provision, and what they get.", no_args_is_help=True
)


def _describe(enrollment: Enrollment) -> dict[str, object]:
    """Everything but the secrets."""
    return {
        "id": enrollment.id,
        "kind": enrollment.kind.value,
        "mechanism": enrollment.mechanism.value,
        "owner": enrollment.owner,
        "enabled": enrollment.enabled,
        "profile": enrollment.profile,
        "validity_days": enrollment.validity_days,
        "key_types": list(enrollment.key_types),
        "device_id_rule": enrollment.device_id_rule.value,
        "device_id_pattern": enrollment.device_id_pattern,
        "registration_id": enrollment.registration_id,
        "manual_approval": enrollment.manual_approval,
        "has_pre_shared_key": enrollment.pre_shared_key is not None,
        "services": dict(enrollment.services),
        "valid_from": enrollment.valid_from.isoformat() if enrollment.valid_from else None,
        "valid_until": enrollment.valid_until.isoformat() if enrollment.valid_until else None,
        "quota": enrollment.quota,
        "x509_chain_certificates": len(enrollment.x509.certificate_chain) if enrollment.x509 else 0,
        "has_group_key": enrollment.group_key is not None,
        "channel": None
        if enrollment.channel is None
        else {
            "fields": dict(enrollment.channel.fields),
            "name": enrollment.channel.name,
            "delivery": enrollment.channel.delivery.value,
        },
        "hub": None if enrollment.hub is None else HubView.of(enrollment.hub).model_dump(),
    }


@app.command("create")
def create(
    mechanism: Annotated[Mechanism, typer.Option(help="Attestation mechanism")],
    owner: Annotated[str, typer.Option(help="Owner organization id")],
    enrollment_id: Annotated[str | None, typer.Option("--id", help="Default: generated")] = None,
    kind: Annotated[
        EnrollmentKind, typer.Option(help="group or individual")
    ] = EnrollmentKind.GROUP,
    registration_id: Annotated[
        str | None, typer.Option(help="The one device of an individual enrollment")
    ] = None,
    profile: Annotated[str, typer.Option(help="Certificate profile")] = "device",
    validity_days: Annotated[int | None, typer.Option(help="Certificate validity")] = None,
    key_type: Annotated[
        list[str] | None, typer.Option(help="Allowed device key type; repeat for more")
    ] = None,
    device_id_rule: Annotated[
        DeviceIdRule | None, typer.Option(help="Where the id comes from")
    ] = None,
    device_id_pattern: Annotated[
        str | None, typer.Option(help="Regex device ids must match")
    ] = None,
    manual_approval: Annotated[bool, typer.Option(help="Hold devices until approved")] = False,
    generate_psk: Annotated[bool, typer.Option(help="Generate a pre-shared key")] = False,
    service: Annotated[
        list[str] | None, typer.Option(help="NAME=ADDRESS, e.g. mqtt=mqtts://broker:8883")
    ] = None,
    quota: Annotated[int | None, typer.Option(help="At most this many devices")] = None,
    x509_chain: Annotated[
        Path | None, typer.Option(help="x509: manufacturer chain PEM, nearest CA first, root last")
    ] = None,
    lead_certificate_name: Annotated[
        str | None, typer.Option(help="x509: lead certificate")
    ] = None,
    accept_expired: Annotated[bool, typer.Option(help="x509: accept expired IDevIDs")] = False,
    from_file: Annotated[
        Path | None, typer.Option("--file", help="YAML or JSON with the API's fields instead")
    ] = None,
) -> None:
    """Create an enrollment; generated secrets are printed once."""
    if from_file is not None:
        try:
            data = yaml.safe_load(from_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"cannot read {from_file}: {exc}")
        data = {"mechanism": mechanism.value, "owner": owner, **(data or {})}
    else:
        services: dict[str, str] = {}
        for item in service or []:
            name, sep, address = item.partition("=")
            if not sep:
                _fail(f"--service {item!r}: use NAME=ADDRESS")
            services[name] = address
        chain: list[str] = []
        if x509_chain is not None:
            text = x509_chain.read_text(encoding="ascii")
            marker = "-----END CERTIFICATE-----"
            chain = [
                part.strip() + "\n" + marker + "\n" for part in text.split(marker) if part.strip()
            ]
        data = {
            "id": enrollment_id,
            "kind": kind.value,
            "mechanism": mechanism.value,
            "owner": owner,
            "registration_id": registration_id,
            "profile": profile,
            "validity_days": validity_days,
            "device_id_rule": device_id_rule.value if device_id_rule else None,
            "device_id_pattern": device_id_pattern,
            "manual_approval": manual_approval,
            "generate_pre_shared_key": generate_psk,
            "services": services,
            "quota": quota,
            "x509": {
                "certificate_chain": chain,
                "lead_certificate_name": lead_certificate_name,
                "accept_expired": accept_expired,
            }
            if x509_chain is not None
            else None,
        }
        if key_type:
            data["key_types"] = key_type
    try:
        spec = EnrollmentSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid enrollment: {problems}")
    with _runtime() as runtime:
        enrollment = runtime.app.enrollments.create(cli_principal(), spec)
    shown = _describe(enrollment)
    sys.stdout.write(json.dumps(shown, indent=2) + "\n")
    if enrollment.pre_shared_key is not None and spec.generate_pre_shared_key:
        out.print(f"pre-shared key (shown once): {enrollment.pre_shared_key}")
    if enrollment.group_key is not None and spec.group_key is None:
        key = base64.b64encode(enrollment.group_key).decode()
        out.print(f"group key (shown once, base64): {key}")


def _read_data(from_file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(from_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {from_file}: {exc}")
    if data is not None and not isinstance(data, dict):
        _fail(f"{from_file}: a mapping of the API's fields")
    return dict(data or {})


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"{option} {item!r}: use NAME=VALUE")
        found[name] = value
    return found


@app.command("update")
def update(
    enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")],
    channel_field: Annotated[
        list[str] | None,
        typer.Option(help="Give new devices a channel: FIELD=LABEL, e.g. field1=temperature"),
    ] = None,
    channel_name: Annotated[
        str | None, typer.Option(help="Channel name ({device_id} is replaced)")
    ] = None,
    channel_delivery: Annotated[
        str | None, typer.Option(help="sealed or plain (with --channel-field)")
    ] = None,
    no_channel: Annotated[bool, typer.Option(help="New devices get no channel")] = False,
    service: Annotated[
        list[str] | None, typer.Option(help="NAME=ADDRESS; replaces all services; repeat")
    ] = None,
    no_services: Annotated[bool, typer.Option(help="Remove every service")] = False,
    valid_from: Annotated[str | None, typer.Option(help="ISO 8601; '' clears it")] = None,
    valid_until: Annotated[str | None, typer.Option(help="ISO 8601; '' clears it")] = None,
    quota: Annotated[
        int | None, typer.Option(help="At most this many devices (0: no limit)")
    ] = None,
    manual_approval: Annotated[
        bool | None,
        typer.Option("--manual-approval/--automatic-approval", help="Hold devices until approved"),
    ] = None,
    psk: Annotated[
        str | None, typer.Option("--psk", help="The pre-shared key (at least 16 characters)")
    ] = None,
    generate_psk: Annotated[bool, typer.Option(help="Generate a new pre-shared key")] = False,
    no_psk: Annotated[bool, typer.Option(help="Devices get no pre-shared key")] = False,
    profile: Annotated[str | None, typer.Option(help="Certificate profile")] = None,
    validity_days: Annotated[int | None, typer.Option(help="Certificate validity")] = None,
    key_type: Annotated[
        list[str] | None, typer.Option(help="Allowed key type; replaces the list; repeat")
    ] = None,
    device_id_pattern: Annotated[
        str | None, typer.Option(help="Regex device ids must match ('' clears it)")
    ] = None,
    reprovision: Annotated[
        ReprovisionPolicy | None, typer.Option(help="allow or reset-required")
    ] = None,
    renewal_grace_days: Annotated[
        int | None, typer.Option(help="Days after expiry a signed renewal still works")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--file", help="YAML or JSON with the API's PATCH fields")
    ] = None,
) -> None:
    """Change an enrollment: only the options given (the rest stays as it is)."""
    data: dict[str, Any] = _read_data(from_file) if from_file is not None else {}
    if channel_field:
        channel: dict[str, Any] = {"fields": _pairs(channel_field, "--channel-field")}
        if channel_name is not None:
            channel["name"] = channel_name
        if channel_delivery is not None:
            channel["delivery"] = channel_delivery
        data["channel"] = channel
    elif channel_name is not None or channel_delivery is not None:
        _fail("--channel-name and --channel-delivery go with --channel-field")
    if no_channel:
        data["channel"] = None
    if service:
        data["services"] = _pairs(service, "--service")
    if no_services:
        data["services"] = {}
    for name, text in (("valid_from", valid_from), ("valid_until", valid_until)):
        if text is not None:
            data[name] = text or None
    if quota is not None:
        data["quota"] = quota or None
    if manual_approval is not None:
        data["manual_approval"] = manual_approval
    if psk is not None:
        data["pre_shared_key"] = psk
    if no_psk:
        data["pre_shared_key"] = None
    if generate_psk:
        data["generate_pre_shared_key"] = True
    if profile is not None:
        data["profile"] = profile
    if validity_days is not None:
        data["validity_days"] = validity_days
    if key_type:
        data["key_types"] = key_type
    if device_id_pattern is not None:
        data["device_id_pattern"] = device_id_pattern or None
    if reprovision is not None:
        data["reprovision"] = reprovision.value
    if renewal_grace_days is not None:
        data["renewal_grace_days"] = renewal_grace_days
    if not data:
        _fail("nothing to change: give at least one option (see --help)")
    try:
        patch = EnrollmentPatch.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid change: {problems}")
    with _runtime() as runtime:
        patched = runtime.app.enrollments.update(cli_principal(), enrollment_id, patch)
    sys.stdout.write(json.dumps(_describe(patched.enrollment), indent=2) + "\n")
    changed = ", ".join(patched.changed) or "nothing (every value was the current one)"
    out.print(f"changed: {changed}")
    if patched.generated_pre_shared_key is not None:
        out.print(f"pre-shared key (shown once): {patched.generated_pre_shared_key}")


@app.command("list")
def list_enrollments(
    mechanism: Annotated[Mechanism | None, typer.Option(help="Only this mechanism")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner")] = None,
) -> None:
    """List enrollments as a table."""
    with _runtime() as runtime:
        found = runtime.app.enrollments.search(
            cli_principal(), mechanism=mechanism, owner=owner, limit=1000
        )
    table = Table(title=f"{len(found)} enrollment(s)")
    for column in ("id", "kind", "mechanism", "owner", "enabled", "approval", "quota"):
        table.add_column(column)
    for item in found:
        table.add_row(
            item.id,
            item.kind.value,
            item.mechanism.value,
            item.owner,
            "yes" if item.enabled else "no",
            "manual" if item.manual_approval else "automatic",
            str(item.quota) if item.quota else "-",
        )
    out.print(table)


@app.command("show")
def show(enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")]) -> None:
    """Show one enrollment (without its secrets) as JSON."""
    with _runtime() as runtime:
        enrollment = runtime.app.enrollments.show(cli_principal(), enrollment_id)
    sys.stdout.write(json.dumps(_describe(enrollment), indent=2) + "\n")


@app.command("disable")
def disable(enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")]) -> None:
    """Stop admitting devices through this enrollment."""
    with _runtime() as runtime:
        runtime.app.enrollments.disable(cli_principal(), enrollment_id)
    out.print(f"enrollment {enrollment_id} disabled")


@app.command("enable")
def enable(enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")]) -> None:
    """Admit devices again."""
    with _runtime() as runtime:
        runtime.app.enrollments.enable(cli_principal(), enrollment_id)
    out.print(f"enrollment {enrollment_id} enabled")


@app.command("delete")
def delete(enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")]) -> None:
    """Delete an enrollment (devices already provisioned keep their certificates)."""
    with _runtime() as runtime:
        runtime.app.enrollments.delete(cli_principal(), enrollment_id)
    out.print(f"enrollment {enrollment_id} deleted")
