"""Devices: the searchable list, a device's page, and its lifecycle actions.

Every action has a confirmation page (GET) whose form (POST, CSRF-checked) acts; the
role checks are the API's (operator for actions, viewer to read) and a foreign device
is a 404 page, exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.devices import BULK_ACTIONS
from imprint.app.scoping import scope_of, visible_device
from imprint.console import queries
from imprint.console.listing import Pager, csv_response
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleUser,
    flash,
    form_of,
    redirect,
    render,
    runtime,
)
from imprint.errors import InvalidValue, NotFound
from imprint.pki.authority import REVOCATION_REASONS
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.provisioning.renewal import renew_after, renewal_accepted_until
from imprint.runtime import Runtime
from imprint.store.listing import Order
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)

Text = Annotated[str | None, Query(max_length=200)]


@dataclass(frozen=True, slots=True)
class Action:
    verb: str
    title: str
    question: str
    danger: bool
    allowed: Callable[[Device], bool]


ACTIONS: dict[str, Action] = {
    "approve": Action(
        "Approve",
        "Approve device",
        "The device may then collect its certificate.",
        False,
        lambda d: d.status is DeviceStatus.PENDING,
    ),
    "disable": Action(
        "Disable",
        "Disable device",
        "The device can no longer provision or renew until it is enabled again.",
        True,
        lambda d: d.status is not DeviceStatus.DISABLED,
    ),
    "enable": Action(
        "Enable",
        "Enable device",
        "The device may provision and renew again.",
        False,
        lambda d: d.status is DeviceStatus.DISABLED,
    ),
    "revoke": Action(
        "Revoke",
        "Revoke certificate",
        "The device's certificate is revoked (it appears on the CRL) and the device is "
        "disabled. This cannot be undone.",
        True,
        lambda d: d.certificate_serial is not None,
    ),
    "reset": Action(
        "Factory reset",
        "Factory reset",
        "The device's certificate is revoked and the device is released: it may "
        "provision again from scratch.",
        True,
        lambda d: d.status is not DeviceStatus.RESET,
    ),
}


def _choice(value: str | None, allowed: set[str]) -> str | None:
    return value if value in allowed else None


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """The device list's filters as the query string gives them, and as the query
    takes them."""

    params: dict[str, str]
    where: queries.DeviceFilter


def device_query(
    q: str | None,
    status: str | None,
    org: str | None,
    enrollment: str | None,
    expiry: str | None,
) -> DeviceQuery:
    """The filters of the device list, its export and a bulk action on "all matching"."""
    params = {
        "q": (q or "").strip(),
        "status": _choice(status, {s.value for s in DeviceStatus}) or "",
        "org": (org or "").strip(),
        "enrollment": (enrollment or "").strip(),
        "expiry": _choice(expiry, {"7", "30", "90", "expired"}) or "",
    }
    where = queries.DeviceFilter(
        text=params["q"] or None,
        status=params["status"] or None,
        owner=params["org"] or None,
        enrollment_id=params["enrollment"] or None,
        expiry=params["expiry"] or None,
    )
    return DeviceQuery(params, where)


def org_names(rt: Runtime) -> dict[str, str]:
    """Organization id → name, for showing organizations by name."""
    return {org_id: org.name for org_id, org in rt.org_tree().orgs.items()}


@router.get("/devices")
async def device_list(
    request: Request,
    user: ConsoleUser,
    q: Text = None,
    status: Text = None,
    org: Text = None,
    enrollment: Text = None,
    expiry: Text = None,
    sort: Text = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rt = runtime(request)
    owners = scope_of(rt, user)
    query = device_query(q, status, org, enrollment, expiry)
    order = queries.DEVICE_SORT.known(Order.parse(sort, queries.DEVICE_SORT.default))

    def load() -> dict[str, Any]:
        pager = Pager("/console/devices", {**query.params, "sort": sort or ""}, page, 0, order)
        rows, total = queries.search_devices(
            rt.engine,
            owners,
            query.where,
            now=rt.clock.now(),
            order=order,
            offset=pager.offset,
            limit=pager.size,
        )
        names = org_names(rt)
        return {
            "devices": rows,
            "pager": replace(pager, total=total, default_descending=("updated", "expires")),
            "orgs": [(o, names.get(o, o)) for o in sorted(owners if owners is not None else names)],
            "org_names": names,
            "enrollments": queries.enrollment_ids(rt.engine, owners),
        }

    context = await run_in_threadpool(load)
    if context["pager"].beyond:
        return redirect(context["pager"].beyond)
    return render(
        request,
        "devices.html",
        title="Devices",
        active="/console/devices",
        filters=query.params,
        filtered=any(query.params.values()),
        statuses=[s.value for s in DeviceStatus],
        bulk_actions=BULK_ACTIONS,
        can_act=_can_act(user),
        now=rt.clock.now(),
        **context,
    )


def _can_act(user: Principal) -> bool:
    """Whether the user is an operator somewhere (the bulk form is for operators)."""
    return user.instance_admin or any(r.allows(Role.OPERATOR) for r in user.memberships.values())


@router.get("/devices.csv")
async def device_export(
    request: Request,
    user: ConsoleUser,
    q: Text = None,
    status: Text = None,
    org: Text = None,
    enrollment: Text = None,
    expiry: Text = None,
    sort: Text = None,
) -> Response:
    """The devices that match, in the list's order (its ``sort``), streamed in chunks."""
    rt = runtime(request)
    owners = scope_of(rt, user)
    query = device_query(q, status, org, enrollment, expiry)
    order = queries.DEVICE_SORT.known(Order.parse(sort, queries.DEVICE_SORT.default))
    names = org_names(rt)
    rows = queries.each_device(rt.engine, owners, query.where, now=rt.clock.now(), order=order)
    return csv_response(
        "devices.csv",
        [
            "reference",
            "device_id",
            "status",
            "organization",
            "organization_name",
            "enrollment",
            "mechanism",
            "certificate_serial",
            "certificate_status",
            "certificate_not_after",
            "updated_at",
        ],
        (
            (
                d.id,
                d.device_id,
                d.status,
                d.owner,
                names.get(d.owner, ""),
                d.enrollment_id,
                d.mechanism,
                d.certificate_serial,
                d.certificate_status,
                d.not_after if d.certificate_status != "revoked" else None,
                d.updated_at,
            )
            for d in rows
        ),
    )


@dataclass(frozen=True, slots=True)
class CertificateView:
    record: CertificateRecord
    issuer: str
    key_type: str
    sans: tuple[str, ...]


def _key_type(certificate: x509.Certificate) -> str:
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _certificate(rt: Runtime, serial: str | None) -> CertificateView | None:
    if serial is None:
        return None
    try:
        record = rt.ledger.get(serial)
    except NotFound:
        return None
    issuer, key_type = "-", "-"
    if record.der is not None:
        certificate = x509.load_der_x509_certificate(record.der)
        issuer, key_type = certificate.issuer.rfc4514_string(), _key_type(certificate)
    return CertificateView(record, issuer, key_type, tuple(record.sans))


@dataclass(frozen=True, slots=True)
class Renewal:
    due: datetime
    accepted_until: datetime
    grace_days: int


def _renewal(rt: Runtime, device: Device, certificate: CertificateView | None) -> Renewal | None:
    """When the device's issued certificate is due for renewal, and until when its
    enrollment accepts the renewal (after expiry, its renewal grace)."""
    if certificate is None or certificate.record.status is not CertificateStatus.ISSUED:
        return None
    try:
        grace = rt.enrollments.get(device.enrollment_id).renewal_grace_days
    except NotFound:
        grace = 0
    record = certificate.record
    return Renewal(
        renew_after(record.not_before, record.not_after),
        renewal_accepted_until(record.not_after, grace),
        grace,
    )


@router.get("/devices/{device_ref}")
async def device_page(request: Request, user: ConsoleUser, device_ref: str) -> Response:
    rt = runtime(request)

    def load() -> dict[str, Any]:
        device = visible_device(rt, user, device_ref, Role.VIEWER)
        certificate = _certificate(rt, device.certificate_serial)
        return {
            "device": device,
            "owner_name": org_names(rt).get(device.owner, device.owner),
            "certificate": certificate,
            "renewal": _renewal(rt, device, certificate),
            "history": rt.app.devices.certificates(user, device.id),
            "attributes": rt.app.devices.attributes(user, device.id),
            "timeline": rt.records.for_device(device.id),
            "channel": rt.channels.for_device(device.id),
            "actions": [(name, a) for name, a in ACTIONS.items() if a.allowed(device)],
        }

    context = await run_in_threadpool(load)
    device = context["device"]
    assert isinstance(device, Device)
    return render(
        request,
        "device.html",
        title=f"Device {device.device_id}",
        active="/console/devices",
        **context,
    )


def _action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        raise NotFound(f"no device action {name!r}")
    return action


@router.get("/devices/{device_ref}/{name}")
async def confirm_page(request: Request, user: ConsoleUser, device_ref: str, name: str) -> Response:
    action = _action(name)
    rt = runtime(request)
    device = await run_in_threadpool(visible_device, rt, user, device_ref, Role.OPERATOR)
    return render(
        request,
        "confirm.html",
        title=action.title,
        active="/console/devices",
        device=device,
        action=action,
        name=name,
        reasons=list(REVOCATION_REASONS),
        allowed=action.allowed(device),
    )


def _act(rt: Runtime, user: Principal, device_ref: str, name: str, reason: str) -> Device:
    device = visible_device(rt, user, device_ref, Role.OPERATOR)
    if not ACTIONS[name].allowed(device):
        raise InvalidValue(
            f"a {device.status.value} device cannot be {name}d", code="action_not_allowed"
        )
    devices = rt.app.devices
    if name == "approve":
        return devices.approve(user, device.id)
    if name == "disable":
        return devices.disable(user, device.id)
    if name == "enable":
        return devices.enable(user, device.id)
    if name == "revoke":
        return devices.revoke(user, device.id, reason, disable=True)
    return devices.reset(user, device.id)


@router.post("/devices/{device_ref}/{name}")
async def act(request: Request, user: ConsoleUser, device_ref: str, name: str) -> Response:
    form = await form_of(request)
    action = _action(name)
    reason = form.get("reason", "unspecified")
    done = await run_in_threadpool(_act, runtime(request), user, device_ref, name, reason)
    response = redirect(f"/console/devices/{done.id}")
    flash(request, response, f"{action.verb}: device {done.device_id} is now {done.status.value}.")
    return response
