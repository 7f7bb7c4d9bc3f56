"""What webhooks are made of: subscriptions, delivery attempts, provisioning hooks."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from imprint.errors import InvalidValue

__all__ = [
    "EVENT_TYPES",
    "Delivery",
    "HookFailure",
    "ProvisioningHook",
    "Subscription",
    "check_events",
    "check_url",
    "new_secret",
]

#: Every event a subscription may ask for.
EVENT_TYPES = (
    "provisioning.succeeded",
    "provisioning.failed",
    "device.awaiting_approval",
    "certificate.revoked",
    "certificate.expiring",
)

HookFailure = Literal["deny", "allow"]

_LOOPBACK_NAMES = {"localhost", "localhost."}


@dataclass(frozen=True, slots=True)
class Subscription:
    """A receiver of an organization's events (its secret is kept apart, sealed)."""

    id: str
    org_id: str
    url: str
    events: tuple[str, ...]
    enabled: bool
    description: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.events


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to deliver one event to one subscription."""

    subscription_id: str
    org_id: str
    event_id: str
    event_type: str
    attempt: int
    at: datetime
    outcome: Literal["delivered", "failed", "expired"]
    status_code: int | None
    error: str | None
    duration_ms: int
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ProvisioningHook:
    """An organization's provisioning hook: asked before a registration is signed."""

    org_id: str
    url: str
    timeout_seconds: float
    on_failure: HookFailure
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


def new_secret() -> str:
    """A fresh signing secret (shown once, to be stored by the receiver)."""
    return "whsec_" + secrets.token_urlsafe(32)


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http_loopback: bool) -> str:
    """The URL, if imprint may send to it: https://, or http:// to a loopback address
    when ``webhooks.allow_http_loopback`` says so.

    Raises:
        InvalidValue: not such a URL.
    """
    if len(url) > 2000:
        raise InvalidValue("url: at most 2000 characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise InvalidValue("url: not a valid URL") from None
    if not host or parts.username or parts.password or any(c.isspace() for c in url):
        raise InvalidValue("url: an absolute URL with a host and no user or password")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_http_loopback and _loopback(host):
        return url
    if parts.scheme == "http" and _loopback(host):
        raise InvalidValue(
            "url: http:// is accepted only for loopback addresses and only with "
            "webhooks.allow_http_loopback; use https://"
        )
    raise InvalidValue("url: must be an https:// URL")


def check_events(events: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The event types, each known, without repeats, in the canonical order.

    Raises:
        InvalidValue: none, or an unknown one.
    """
    if not events:
        raise InvalidValue(f"events: name at least one of {', '.join(EVENT_TYPES)}")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidValue(f"events: unknown event {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    return tuple(e for e in EVENT_TYPES if e in events)
