"""Webhooks: the subscriptions of the organizations you see, their delivery log (each
attempt's time, event, status or error and attempt number) and the provisioning hooks.

An admin of an organization may subscribe a new receiver here; its signing secret is
shown on the answer to that form, once. Everything goes through the same operations as
the API (``runtime.app.webhooks``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.console.pages import ConsoleRoute, ConsoleUser, form_of, render, runtime
from imprint.errors import ImprintError, NotFound, PermissionDenied
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.webhooks.model import EVENT_TYPES, ProvisioningHook

router = APIRouter(route_class=ConsoleRoute)

PAGE = "/console/webhooks"
LOG_SIZE = 50


def _context(rt: Runtime, user: Principal, before: int | None) -> dict[str, Any]:
    ops = rt.app.webhooks
    subscriptions = list(ops.search(user))
    deliveries = list(ops.deliveries(user, limit=LOG_SIZE + 1, before=before))
    scope = rt.app.audit.scope(user)
    orgs = sorted(scope) if scope is not None else sorted(rt.org_tree().orgs)
    hooks: list[ProvisioningHook] = []
    for org_id in orgs:
        found = rt.webhook_store.hook(org_id)
        if found is not None:
            hooks.append(found)
    more = len(deliveries) > LOG_SIZE
    deliveries = deliveries[:LOG_SIZE]
    return {
        "subscriptions": subscriptions,
        "urls": {s.id: s.url for s in subscriptions},
        "deliveries": deliveries,
        "next_url": f"{PAGE}?before={deliveries[-1].id}" if more and deliveries else None,
        "hooks": hooks,
        "orgs": orgs,
        "event_types": EVENT_TYPES,
        "issued": None,
        "error": None,
        "form": None,
    }


def _page(
    request: Request,
    user: Principal,
    rt: Runtime,
    *,
    before: int | None = None,
    status: int = 200,
    **extra: Any,
) -> Response:
    context = _context(rt, user, before)
    context.update(extra)
    return render(request, "webhooks.html", status=status, title="Webhooks", active=PAGE, **context)


@router.get("/webhooks")
async def webhooks(
    request: Request,
    user: ConsoleUser,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    rt = runtime(request)
    return await run_in_threadpool(lambda: _page(request, user, rt, before=before))


@router.post("/webhooks")
async def subscribe(request: Request, user: ConsoleUser) -> Response:
    """Subscribe a receiver; the answer shows its secret once."""
    form = await form_of(request)
    rt = runtime(request)
    events = [e for e in EVENT_TYPES if form.get(f"event:{e}")]
    org_id = form.get("org", "")
    url = form.get("url", "").strip()
    description = form.get("description", "").strip() or None

    def act() -> Response:
        try:
            issued = rt.app.webhooks.create(user, org_id, url, events, description=description)
        except ImprintError as exc:
            return _page(
                request,
                user,
                rt,
                status=_status(exc),
                error=exc.message,
                form={"org": org_id, "url": url, "events": events, "description": description},
            )
        return _page(request, user, rt, issued=issued)

    return await run_in_threadpool(act)


def _status(exc: ImprintError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, PermissionDenied):
        return 403
    return 400
