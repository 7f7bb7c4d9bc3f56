"""Devices: the searchable list, a device's page, and its lifecycle actions.

Every action has a confirmation page (GET) whose form (POST, CSRF-checked) acts; the
role checks are the API's (operator for actions, viewer to read) and a foreign device
is a 404 page, exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.scoping import scope_of, visible_device
from imprint.console import queries
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
from imprint.pki.records import CertificateRecord
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50
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


@router.get("/devices")
async def device_list(
    request: Request,
    user: ConsoleUser,
    q: Text = None,
    status: Text = None,
    org: Text = None,
    enrollment: Text = None,
    expiry: Text = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    rt = runtime(request)
    owners = scope_of(rt, user)
    filters = {
        "q": (q or "").strip(),
        "status": _choice(status, {s.value for s in DeviceStatus}) or "",
        "org": (org or "").strip(),
        "enrollment": (enrollment or "").strip(),
        "expiry": _choice(expiry, {"7", "30", "90", "expired"}) or "",
    }

    def load() -> tuple[object, bool, list[str], list[str]]:
        rows, more = queries.search_devices(
            rt.engine,
            owners,
            text=filters["q"] or None,
            status=filters["status"] or None,
            owner=filters["org"] or None,
            enrollment_id=filters["enrollment"] or None,
            expiry=filters["expiry"] or None,
            now=rt.clock.now(),
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        tree = rt.org_tree()
        orgs = sorted(owners if owners is not None else tree.orgs)
        return rows, more, orgs, queries.enrollment_ids(rt.engine, owners)

    rows, more, orgs, enrollments = await run_in_threadpool(load)
    kept = {k: v for k, v in filters.items() if v}

    def page_url(number: int) -> str:
        return "/console/devices?" + urlencode({**kept, "page": number})

    return render(
        request,
        "devices.html",
        title="Devices",
        active="/console/devices",
        devices=rows,
        prev_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if more else None,
        filters=filters,
        filtered=any(filters.values()),
        statuses=[s.value for s in DeviceStatus],
        orgs=orgs,
        enrollments=enrollments,
        now=rt.clock.now(),
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


@router.get("/devices/{device_ref}")
async def device_page(request: Request, user: ConsoleUser, device_ref: str) -> Response:
    rt = runtime(request)

    def load() -> dict[str, Any]:
        device = visible_device(rt, user, device_ref, Role.VIEWER)
        return {
            "device": device,
            "certificate": _certificate(rt, device.certificate_serial),
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
