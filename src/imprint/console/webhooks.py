"""Webhooks: the subscriptions of the organizations you see, their delivery log (each
attempt's time, event, status or error and attempt number) and the provisioning hooks.

An admin of an organization subscribes a receiver here, changes one (URL, events,
description, enabled) on its own page, rotates its signing secret, deletes it after a
confirmation, and sets, changes or removes the organization's provisioning hook. A new
subscription's secret, a rotated one and a new hook's are shown on the answer to that
form, once. Every form carries the session's CSRF token and calls one operation of
``runtime.app.webhooks`` (the API's), audited as the signed-in user; a refusal is shown
on the page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from imprint.app.webhooks import HookSpec, SubscriptionPatch
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleUser,
    flash,
    form_of,
    redirect,
    render,
    runtime,
)
from imprint.errors import ImprintError, InvalidValue, NotFound, PermissionDenied
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.webhooks.model import EVENT_TYPES, ProvisioningHook, Subscription

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
        "hook_issued": None,
        "hook_error": None,
        "hook_form": None,
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
    return _render(request, {**_context(rt, user, before), **extra}, status)


def _render(request: Request, context: dict[str, Any], status: int) -> Response:
    return render(request, "webhooks.html", status=status, title="Webhooks", active=PAGE, **context)


@router.get("/webhooks")
async def webhooks(
    request: Request,
    user: ConsoleUser,
    before: Annotated[int | None, Query(ge=1)] = None,
    hook: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The page; with ``hook=ORG``, the hook form holds that organization's hook as it
    is, so that changing one setting keeps the others."""
    rt = runtime(request)

    def show() -> Response:
        if hook is None:
            return _page(request, user, rt, before=before)
        context = _context(rt, user, before)
        found = next((h for h in context["hooks"] if h.org_id == hook), None)
        if found is None:
            context["hook_error"] = f"No provisioning hook of {hook!r} that you can see."
            return _render(request, context, 404)
        context["hook_form"] = {
            "org": found.org_id,
            "url": found.url,
            "timeout": str(found.timeout_seconds),
            "on_failure": found.on_failure,
            "enabled": found.enabled,
            "rotate": False,
        }
        return _render(request, context, 200)

    return await run_in_threadpool(show)


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


def _checked(value: str | None) -> bool:
    return value in ("on", "true", "1")


@router.post("/webhooks/hook")
async def set_hook(request: Request, user: ConsoleUser) -> Response:
    """Set (or change) an organization's provisioning hook; a new hook's secret, or a
    rotated one, is shown on the answer once."""
    form = await form_of(request)
    rt = runtime(request)
    org_id = form.get("org", "")
    url = form.get("url", "").strip()
    timeout = form.get("timeout", "5").strip()
    on_failure = form.get("on_failure", "deny")
    enabled, rotate = _checked(form.get("enabled")), _checked(form.get("rotate"))
    values = {
        "org": org_id,
        "url": url,
        "timeout": timeout,
        "on_failure": on_failure,
        "enabled": enabled,
        "rotate": rotate,
    }

    def act() -> Response:
        try:
            if on_failure not in ("allow", "deny"):
                raise InvalidValue('on_failure: "deny" or "allow"')
            try:
                seconds = float(timeout)
            except ValueError:
                raise InvalidValue("timeout_seconds: a number of seconds") from None
            spec = HookSpec(
                url=url,
                timeout_seconds=seconds,
                on_failure="allow" if on_failure == "allow" else "deny",
                enabled=enabled,
            )
            issued = rt.app.webhooks.set_hook(user, org_id, spec, rotate_secret=rotate)
        except ImprintError as exc:
            return _page(
                request, user, rt, status=_status(exc), hook_error=exc.message, hook_form=values
            )
        return _page(request, user, rt, hook_issued=issued)

    return await run_in_threadpool(act)


@router.post("/webhooks/hook/{org_id}/remove")
async def remove_hook(request: Request, user: ConsoleUser, org_id: str) -> Response:
    """Remove an organization's provisioning hook."""
    await form_of(request)
    rt = runtime(request)

    def act() -> Response:
        try:
            rt.app.webhooks.remove_hook(user, org_id)
        except ImprintError as exc:
            return _page(request, user, rt, status=_status(exc), hook_error=exc.message)
        response = redirect(PAGE)
        flash(request, response, f"The provisioning hook of {org_id} is removed.")
        return response

    return await run_in_threadpool(act)


def _one(
    request: Request,
    user: Principal,
    subscription: Subscription,
    *,
    template: str = "webhook.html",
    status: int = 200,
    **extra: Any,
) -> Response:
    context: dict[str, Any] = {
        "subscription": subscription,
        "event_types": EVENT_TYPES,
        "issued": None,
        "error": None,
        "form": None,
    }
    context.update(extra)
    return render(
        request,
        template,
        status=status,
        title=f"Webhook {subscription.id}",
        active=PAGE,
        **context,
    )


@router.get("/webhooks/{subscription_id}")
async def webhook_page(request: Request, user: ConsoleUser, subscription_id: str) -> Response:
    """One subscription: its form, its secret's rotation and its deletion."""
    rt = runtime(request)
    subscription = await run_in_threadpool(rt.app.webhooks.show, user, subscription_id)
    return _one(request, user, subscription)


@router.post("/webhooks/{subscription_id}")
async def update(request: Request, user: ConsoleUser, subscription_id: str) -> Response:
    """Change a subscription's URL, events, description and enabled flag."""
    form = await form_of(request)
    rt = runtime(request)
    url = form.get("url", "").strip()
    events = [e for e in EVENT_TYPES if form.get(f"event:{e}")]
    description = form.get("description", "").strip()
    enabled = _checked(form.get("enabled"))
    values = {"url": url, "events": events, "description": description, "enabled": enabled}
    patch = SubscriptionPatch(url=url, events=events, description=description, enabled=enabled)

    def act() -> Response:
        try:
            rt.app.webhooks.update(user, subscription_id, patch)
        except ImprintError as exc:
            current = rt.app.webhooks.show(user, subscription_id)
            return _one(request, user, current, status=_status(exc), error=exc.message, form=values)
        response = redirect(f"{PAGE}/{subscription_id}")
        flash(request, response, "Webhook saved.")
        return response

    return await run_in_threadpool(act)


@router.post("/webhooks/{subscription_id}/rotate")
async def rotate(request: Request, user: ConsoleUser, subscription_id: str) -> Response:
    """A new signing secret, shown on the answer once; the old one stops at once."""
    await form_of(request)
    rt = runtime(request)

    def act() -> Response:
        issued = rt.app.webhooks.rotate_secret(user, subscription_id)
        return _one(request, user, issued.subscription, issued=issued)

    return await run_in_threadpool(act)


@router.get("/webhooks/{subscription_id}/delete")
async def delete_page(request: Request, user: ConsoleUser, subscription_id: str) -> Response:
    """Ask before deleting a subscription."""
    rt = runtime(request)
    subscription = await run_in_threadpool(rt.app.webhooks.show, user, subscription_id)
    return _one(request, user, subscription, template="webhook_delete.html")


@router.post("/webhooks/{subscription_id}/delete")
async def delete(request: Request, user: ConsoleUser, subscription_id: str) -> Response:
    await form_of(request)
    rt = runtime(request)

    def act() -> RedirectResponse:
        gone = rt.app.webhooks.delete(user, subscription_id)
        response = redirect(PAGE)
        flash(request, response, f"Webhook {gone.id} ({gone.url}) is deleted.")
        return response

    return await run_in_threadpool(act)


def _status(exc: ImprintError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, PermissionDenied):
        return 403
    return 400
