"""``imprint enrollment ...``: manage enrollment groups and individual enrollments."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml
from pydantic import ValidationError

from imprint.cli import _fail, out
from imprint.cli.calls import AllOption, CursorOption, LimitOption, Paging, paged, perform
from imprint.cli.output import (
    Column,
    Format,
    OutputOption,
    default_format,
    render_done,
    render_item,
    render_page,
)
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
)
from imprint.provisioning.specs import EnrollmentPatch, EnrollmentSpec
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Manage enrollments: who may provision, and what they get.", no_args_is_help=True
)


COLUMNS = [
    Column("id", "id", key=True),
    Column("kind", "kind"),
    Column("mechanism", "mechanism"),
    Column("owner", "owner", key=True),
    Column("enabled", "enabled"),
    Column("approval", lambda e: "manual" if e.get("manual_approval") else "automatic"),
    Column("quota", "quota"),
]
FIELDS = [
    *COLUMNS,
    Column("profile", "profile"),
    Column("validity days", "validity_days"),
    Column("key types", "key_types"),
    Column("device id rule", "device_id_rule"),
    Column("device id pattern", "device_id_pattern"),
    Column("registration id", "registration_id"),
    Column("pre-shared key", "has_pre_shared_key"),
    Column("group key", "has_group_key"),
    Column("services", "services"),
    Column("valid from", "valid_from"),
    Column("valid until", "valid_until"),
    Column("created", "created_at"),
    Column("updated", "updated_at"),
]


def _json(enrollment: Enrollment) -> dict[str, Any]:
    """The enrollment as the REST API shows it (never a secret)."""
    from imprint.api.routes.enrollments import EnrollmentOut

    return EnrollmentOut.of(enrollment).model_dump(mode="json")


def _path(enrollment_id: str) -> str:
    return f"/api/v1/enrollments/{quote(enrollment_id, safe='')}"


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
    output: OutputOption = None,
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

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        enrollment = runtime.app.enrollments.create(principal, spec)
        group_key = enrollment.group_key
        return {
            **_json(enrollment),
            "pre_shared_key": enrollment.pre_shared_key,
            "group_key": None if group_key is None else base64.b64encode(group_key).decode(),
        }

    made = perform(
        local=local,
        remote=lambda api: api.post("/api/v1/enrollments", data),
    )
    secrets = [
        Column("pre-shared key (shown once)", "pre_shared_key"),
        Column("group key (shown once, base64)", "group_key"),
    ]
    if (output or default_format()) is Format.table:
        render_item(made, output, fields=FIELDS)
        if made.get("pre_shared_key") and spec.generate_pre_shared_key:
            out.print(f"pre-shared key (shown once): {made['pre_shared_key']}")
        if made.get("group_key") and spec.group_key is None:
            out.print(f"group key (shown once, base64): {made['group_key']}")
    else:
        render_item(made, output, fields=[*FIELDS, *secrets])


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
    output: OutputOption = None,
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
        EnrollmentPatch.model_validate(data)  # refuse a bad option before any call
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid change: {problems}")

    def local(runtime: Runtime, principal: Principal) -> dict[str, Any]:
        patched = runtime.app.enrollments.update(
            principal, enrollment_id, EnrollmentPatch.model_validate(data)
        )
        return {
            **_json(patched.enrollment),
            "changed": list(patched.changed),
            "pre_shared_key": patched.generated_pre_shared_key,
        }

    done = perform(local=local, remote=lambda api: api.patch(_path(enrollment_id), data))
    extra = [
        Column("changed", "changed"),
        Column("pre-shared key (shown once)", "pre_shared_key"),
    ]
    if (output or default_format()) is Format.table:
        render_item(done, output, fields=FIELDS)
        changed = (
            ", ".join(done.get("changed") or []) or "nothing (every value was the current one)"
        )
        out.print(f"changed: {changed}")
        if done.get("pre_shared_key"):
            out.print(f"pre-shared key (shown once): {done['pre_shared_key']}")
    else:
        render_item(done, output, fields=[*FIELDS, *extra])


@app.command("list")
def list_enrollments(
    mechanism: Annotated[Mechanism | None, typer.Option(help="Only this mechanism")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner")] = None,
    limit: LimitOption = 100,
    cursor: CursorOption = None,
    every: AllOption = False,
    output: OutputOption = None,
) -> None:
    """List enrollments, a page at a time, with the total that match."""
    found = paged(
        lambda rt, principal, after: rt.app.enrollments.page(
            principal, mechanism=mechanism, owner=owner, limit=limit, after=after
        ),
        "/api/v1/enrollments",
        item=_json,
        params={"mechanism": mechanism, "owner": owner},
        paging=Paging(limit, cursor, every),
    )
    render_page(found, COLUMNS, output, noun="enrollment(s)")


@app.command("show")
def show(
    enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")],
    output: OutputOption = None,
) -> None:
    """Show one enrollment (without its secrets)."""
    found = perform(
        local=lambda rt, p: _json(rt.app.enrollments.show(p, enrollment_id)),
        remote=lambda api: api.get(_path(enrollment_id)),
    )
    render_item(found, output, fields=FIELDS)


@app.command("disable")
def disable(
    enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")],
    output: OutputOption = None,
) -> None:
    """Stop admitting devices through this enrollment."""
    done = perform(
        local=lambda rt, p: _json(rt.app.enrollments.disable(p, enrollment_id)),
        remote=lambda api: api.post(f"{_path(enrollment_id)}/disable"),
    )
    render_done(done, output, f"enrollment {enrollment_id} disabled", fields=FIELDS)


@app.command("enable")
def enable(
    enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")],
    output: OutputOption = None,
) -> None:
    """Admit devices again."""
    done = perform(
        local=lambda rt, p: _json(rt.app.enrollments.enable(p, enrollment_id)),
        remote=lambda api: api.post(f"{_path(enrollment_id)}/enable"),
    )
    render_done(done, output, f"enrollment {enrollment_id} enabled", fields=FIELDS)


@app.command("delete")
def delete(
    enrollment_id: Annotated[str, typer.Argument(help="Enrollment id")],
    output: OutputOption = None,
) -> None:
    """Delete an enrollment (devices already provisioned keep their certificates)."""
    perform(
        local=lambda rt, p: rt.app.enrollments.delete(p, enrollment_id),
        remote=lambda api: api.delete(_path(enrollment_id)),
    )
    render_done(
        {"id": enrollment_id, "deleted": True}, output, f"enrollment {enrollment_id} deleted"
    )
