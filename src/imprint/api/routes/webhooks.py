"""Webhooks: subscriptions to an organization's events, their delivery log, and the
organization's provisioning hook (docs/webhooks.md).

Viewers of the organization read; its admins create, change, rotate and delete. A
signing secret is in the answer of a create or a rotation only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.webhooks import (
    DEFAULT_HOOK_TIMEOUT,
    HookSpec,
    IssuedHook,
    IssuedSubscription,
    SubscriptionPatch,
)
from imprint.webhooks.model import Delivery, ProvisioningHook, Subscription

router = APIRouter(tags=["webhooks"])

W = "/api/v1/webhooks"

_NO_STORE = {"Cache-Control": "no-store"}

EventType = Literal[
    "provisioning.succeeded",
    "provisioning.failed",
    "device.awaiting_approval",
    "certificate.revoked",
    "certificate.expiring",
]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: str = Field(min_length=1, max_length=100, description="The organization told")
    url: str = Field(min_length=1, max_length=2000, description="https:// receiver URL")
    events: list[EventType] = Field(min_length=1, max_length=10)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=10)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: str
    org_id: str
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: Subscription) -> WebhookOut:
        return cls(
            id=s.id,
            org_id=s.org_id,
            url=s.url,
            events=list(s.events),
            enabled=s.enabled,
            description=s.description,
            created_by=s.created_by,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class IssuedWebhookOut(WebhookOut):
    secret: str = Field(description="The HMAC-SHA256 signing secret: shown this once")

    @classmethod
    def issued(cls, issued: IssuedSubscription) -> IssuedWebhookOut:
        return cls(**WebhookOut.of(issued.subscription).model_dump(), secret=issued.secret)


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    total: int
    next: str | None = None


class DeliveryOut(BaseModel):
    id: int
    subscription_id: str
    org_id: str
    event_id: str
    event_type: str
    attempt: int = Field(description="1 for the first attempt, 2 for the first retry ...")
    at: datetime
    outcome: Literal["delivered", "failed", "expired"]
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered")
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            id=d.id or 0,
            subscription_id=d.subscription_id,
            org_id=d.org_id,
            event_id=d.event_id,
            event_type=d.event_type,
            attempt=d.attempt,
            at=d.at,
            outcome=d.outcome,
            status_code=d.status_code,
            error=d.error,
            duration_ms=d.duration_ms,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next: str | None = Field(default=None, description="Pass as before= for older attempts")


class HookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="https:// hook URL")
    timeout_seconds: float = Field(default=DEFAULT_HOOK_TIMEOUT, ge=0.5, le=30)
    on_failure: Literal["deny", "allow"] = Field(
        default="deny", description="The decision when the hook times out or fails"
    )
    enabled: bool = True
    rotate_secret: bool = Field(default=False, description="Make a new signing secret")


class HookOut(BaseModel):
    org_id: str
    url: str
    timeout_seconds: float
    on_failure: Literal["deny", "allow"]
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret: str | None = Field(
        default=None, description="The signing secret, only when it was just made"
    )

    @classmethod
    def of(cls, hook: ProvisioningHook, secret: str | None = None) -> HookOut:
        return cls(
            org_id=hook.org_id,
            url=hook.url,
            timeout_seconds=hook.timeout_seconds,
            on_failure=hook.on_failure,
            enabled=hook.enabled,
            created_by=hook.created_by,
            created_at=hook.created_at,
            updated_at=hook.updated_at,
            secret=secret,
        )

    @classmethod
    def issued(cls, issued: IssuedHook) -> HookOut:
        return cls.of(issued.hook, issued.secret)


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post(W, status_code=201, summary="Subscribe a URL to an organization's events (admin)")
def create(
    body: WebhookIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> IssuedWebhookOut:
    response.headers.update(_NO_STORE)
    issued = runtime.app.webhooks.create(
        principal,
        body.org_id,
        body.url,
        list(body.events),
        description=body.description,
        enabled=body.enabled,
    )
    return IssuedWebhookOut.issued(issued)


@router.get(W, summary="The webhooks of the organizations you see")
def list_webhooks(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    org: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 100,
) -> WebhookPage:
    found = runtime.app.webhooks.search(principal, org_id=org, limit=limit)
    return WebhookPage(items=[WebhookOut.of(s) for s in found], total=len(found))


def _page(found: list[Delivery], limit: int) -> DeliveryPage:
    items = [DeliveryOut.of(d) for d in found]
    more = len(items) == limit and items
    return DeliveryPage(items=items, next=str(items[-1].id) if more else None)


@router.get(
    "/api/v1/webhook-deliveries", summary="The delivery log of the webhooks you see, newest first"
)
def deliveries(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    org: Annotated[
        str | None, Query(max_length=100, description="Only this organization's webhooks")
    ] = None,
    limit: Limit = 100,
    before: Annotated[int | None, Query(ge=1, description="The previous page's next")] = None,
) -> DeliveryPage:
    found = runtime.app.webhooks.deliveries(principal, org_id=org, limit=limit, before=before)
    return _page(list(found), limit)


@router.get("/api/v1/provisioning-hooks/{org_id}", summary="An organization's provisioning hook")
def show_hook(org_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> HookOut:
    return HookOut.of(runtime.app.webhooks.hook(principal, org_id))


@router.put(
    "/api/v1/provisioning-hooks/{org_id}", summary="Set an organization's provisioning hook (admin)"
)
def set_hook(
    org_id: str, body: HookIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> HookOut:
    response.headers.update(_NO_STORE)
    spec = HookSpec(body.url, body.timeout_seconds, body.on_failure, body.enabled)
    issued = runtime.app.webhooks.set_hook(
        principal, org_id, spec, rotate_secret=body.rotate_secret
    )
    return HookOut.issued(issued)


@router.delete(
    "/api/v1/provisioning-hooks/{org_id}",
    status_code=204,
    summary="Remove an organization's provisioning hook (admin)",
)
def remove_hook(org_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.webhooks.remove_hook(principal, org_id)
    return Response(status_code=204)


@router.get(W + "/{webhook_id}", summary="One webhook (its secret is never shown again)")
def show(webhook_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> WebhookOut:
    return WebhookOut.of(runtime.app.webhooks.show(principal, webhook_id))


@router.patch(W + "/{webhook_id}", summary="Change a webhook's URL, events, description or state")
def update(
    webhook_id: str, body: WebhookPatch, runtime: RuntimeDep, principal: PrincipalDep
) -> WebhookOut:
    patch = SubscriptionPatch(
        url=body.url,
        events=None if body.events is None else list(body.events),
        enabled=body.enabled,
        description=body.description,
    )
    return WebhookOut.of(runtime.app.webhooks.update(principal, webhook_id, patch))


@router.post(W + "/{webhook_id}/rotate-secret", summary="Give a webhook a new signing secret")
def rotate_secret(
    webhook_id: str, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> IssuedWebhookOut:
    response.headers.update(_NO_STORE)
    return IssuedWebhookOut.issued(runtime.app.webhooks.rotate_secret(principal, webhook_id))


@router.delete(W + "/{webhook_id}", status_code=204, summary="Delete a webhook (its log stays)")
def delete(webhook_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.webhooks.delete(principal, webhook_id)
    return Response(status_code=204)


@router.get(W + "/{webhook_id}/deliveries", summary="One webhook's delivery log, newest first")
def webhook_deliveries(
    webhook_id: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    before: Annotated[int | None, Query(ge=1, description="The previous page's next")] = None,
) -> DeliveryPage:
    found = runtime.app.webhooks.deliveries(
        principal, subscription_id=webhook_id, limit=limit, before=before
    )
    return _page(list(found), limit)
