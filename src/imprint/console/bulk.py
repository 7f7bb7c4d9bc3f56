"""Bulk actions on devices: approve, disable or revoke the selected devices, or all that
match the list's filters.

The list's form (GET) opens a confirmation page that names how many devices the action
changes ("Revoke 37 devices?"); its form (POST, CSRF-checked) acts, each device through
its own operation (``DeviceOperations.bulk``: one transaction and one audit entry per
device). A device of another organization in the selection is "not found": the whole
request is refused and nothing changes. When "all matching" now selects a different
number of devices than the page showed, the page is shown again with the new count
instead of acting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.devices import BULK_ACTIONS, bulk_applies
from imprint.app.scoping import scope_of
from imprint.console import queries
from imprint.console.csrf import check_csrf
from imprint.console.devices import Text, device_query, org_names
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleSessionDep,
    ConsoleUser,
    flash,
    redirect,
    render,
    runtime,
)
from imprint.errors import InvalidValue, NotFound
from imprint.pki.authority import REVOCATION_REASONS
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)

#: The most devices one page may name one by one (a page shows 50).
MAX_NAMED = 1000
#: How many device ids the confirmation page lists.
PREVIEW = 20

VERBS = {"approve": "Approve", "disable": "Disable", "revoke": "Revoke"}
EFFECTS = {
    "approve": "Each may then collect its certificate.",
    "disable": "They can no longer provision or renew until enabled again.",
    "revoke": "Their certificates are revoked (they appear on the CRL) and the devices "
    "are disabled. This cannot be undone.",
}


@dataclass(frozen=True, slots=True)
class Selection:
    """The devices a bulk action names, as the user sees them."""

    action: str
    params: dict[str, str]  # the list's filters, with all=1 or the named devices
    named: tuple[str, ...]
    applies: tuple[queries.DeviceRow, ...]
    skipped: int


def _action(action: str | None) -> str:
    if action not in BULK_ACTIONS:
        raise NotFound(f"no bulk action {action!r}")
    return action


def _select(
    rt: Runtime,
    user: Principal,
    action: str,
    filters: dict[str, str],
    every: bool,
    named: list[str],
) -> Selection:
    """The devices the action would change, and how many selected it would skip.

    Raises:
        InvalidValue: nothing selected, or too many named.
        NotFound: a named device is not one the user sees.
    """
    query = device_query(
        filters.get("q"),
        filters.get("status"),
        filters.get("org"),
        filters.get("enrollment"),
        filters.get("expiry"),
    )
    refs = tuple(dict.fromkeys(r for r in named if r))
    if every:
        where, params = query.where, {**query.params, "all": "1"}
    else:
        if not refs:
            raise InvalidValue("select one or more devices first", code="nothing_selected")
        if len(refs) > MAX_NAMED:
            raise InvalidValue(f"at most {MAX_NAMED} devices by name: use all matching")
        where, params = queries.DeviceFilter(refs=frozenset(refs)), {}
    rows = list(queries.each_device(rt.engine, scope_of(rt, user), where, now=rt.clock.now()))
    if not every and len(rows) != len(refs):
        found = {r.id for r in rows}
        missing = next(r for r in refs if r not in found)
        raise NotFound(f"no device {missing!r}")
    applies = tuple(r for r in rows if bulk_applies(action, r.status, r.certificate_status))
    return Selection(action, params, refs if not every else (), applies, len(rows) - len(applies))


async def _confirm(request: Request, selection: Selection, **extra: Any) -> Response:
    names = await run_in_threadpool(org_names, runtime(request))
    verb = VERBS[selection.action]
    count = len(selection.applies)
    noun = "device" if count == 1 else "devices"
    return render(
        request,
        "bulk_confirm.html",
        title=f"{verb} {count} {noun}?",
        active="/console/devices",
        selection=selection,
        verb=verb,
        question=f"{verb} {count:,} {noun}?",
        effect=EFFECTS[selection.action],
        preview=selection.applies[:PREVIEW],
        reasons=list(REVOCATION_REASONS),
        org_names=names,
        **extra,
    )


@router.get("/devices/bulk")
async def bulk_confirm(
    request: Request,
    user: ConsoleUser,
    action: Text = None,
    all: Annotated[str | None, Query(max_length=1)] = None,
    device: Annotated[list[str] | None, Query(max_length=MAX_NAMED + 1)] = None,
    q: Text = None,
    status: Text = None,
    org: Text = None,
    enrollment: Text = None,
    expiry: Text = None,
) -> Response:
    name = _action(action)
    filters = {"q": q, "status": status, "org": org, "enrollment": enrollment, "expiry": expiry}
    try:
        selection = await run_in_threadpool(
            _select,
            runtime(request),
            user,
            name,
            {k: v for k, v in filters.items() if v},
            all == "1",
            list(device or []),
        )
    except InvalidValue as refused:
        response = redirect("/console/devices")
        flash(request, response, str(refused), "error")
        return response
    return await _confirm(request, selection)


@router.post("/devices/bulk")
async def bulk_act(request: Request, user: ConsoleUser, session: ConsoleSessionDep) -> Response:
    form = await request.form()
    check_csrf(session.csrf, form.get("csrf"))
    text = {k: v for k, v in form.multi_items() if isinstance(v, str) and len(v) <= 200}
    name = _action(text.get("action"))
    named = [v for k, v in form.multi_items() if k == "device" and isinstance(v, str)]
    every = text.get("all") == "1"
    rt = runtime(request)
    selection = await run_in_threadpool(_select, rt, user, name, text, every, named)
    expected = text.get("expected", "")
    if every and expected != str(len(selection.applies)):
        return await _confirm(
            request,
            selection,
            changed=f"The devices that match changed since the last page: "
            f"{len(selection.applies):,} now.",
        )
    refs = [r.id for r in selection.applies] if every else list(selection.named)
    result = await run_in_threadpool(
        rt.app.devices.bulk, user, name, refs, text.get("reason", "unspecified")
    )
    done, skipped = len(result.done), len(result.skipped)
    message = f"{VERBS[name]}: {done:,} device{'s' if done != 1 else ''} done"
    if skipped:
        message += f", {skipped:,} skipped (the action did not apply to them)"
    response = redirect("/console/devices")
    flash(request, response, message + ".")
    return response
