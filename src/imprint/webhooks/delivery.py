"""The outbox handler that posts one event to one subscription and logs the attempt.

A 2xx answer delivers it. Anything else (another status, a timeout, a refused
connection) is logged as a failed attempt and raised, so the outbox retries it with
its backoff (2, 4, 8 ... seconds, at most 5 minutes apart) until it is delivered or
the event is older than ``webhooks.max_age_hours``: then one last ``expired`` row is
logged and the message is done. After a failure, the other messages for the same
receiver are put back for :data:`PAUSE` without a request (and without a log row), so a
dead receiver costs a round one timeout, not one per event. A subscription deleted or
disabled meanwhile gets nothing more. Redirects are not followed. The secret never
leaves this module but in the signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from imprint import __version__
from imprint.clock import Clock
from imprint.errors import NotFound
from imprint.logs import get_logger
from imprint.webhooks.model import Delivery
from imprint.webhooks.signing import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    signed_headers,
)

if TYPE_CHECKING:
    from imprint.store.webhooks import SqlWebhookStore

__all__ = ["DeliveryFailed", "WebhookDelivery", "event_body"]

log = get_logger(__name__)

#: After a failed attempt, how long the receiver's other messages wait without a request.
PAUSE = timedelta(seconds=2)


class DeliveryFailed(Exception):
    """The receiver did not take the event; the outbox tries again later."""


def event_body(event: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for an event."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


class WebhookDelivery:
    """The handler of :data:`~imprint.webhooks.events.WEBHOOK_DELIVERY` messages."""

    def __init__(
        self,
        store: SqlWebhookStore,
        clock: Clock,
        *,
        timeout: float,
        max_age: timedelta,
    ) -> None:
        self._store = store
        self._clock = clock
        self._timeout = timeout
        self._max_age = max_age
        self._paused: dict[str, datetime] = {}  # subscription id -> until

    def __call__(self, payload: Mapping[str, Any]) -> None:
        event = payload["event"]
        try:
            subscription = self._store.get(str(payload["subscription_id"]))
        except NotFound:
            return  # deleted since: nobody to tell
        if not subscription.enabled:
            return
        now = self._clock.now()
        paused = self._paused.get(subscription.id)
        if paused is not None and now < paused:
            raise DeliveryFailed(f"{subscription.id}: its receiver failed a moment ago")
        attempt = self._store.attempts(subscription.id, event["id"]) + 1

        def logged(outcome: str, status: int | None, error: str | None, ms: int) -> None:
            self._store.record(
                Delivery(
                    subscription_id=subscription.id,
                    org_id=subscription.org_id,
                    event_id=event["id"],
                    event_type=event["type"],
                    attempt=attempt,
                    at=now,
                    outcome=outcome,  # type: ignore[arg-type]
                    status_code=status,
                    error=error,
                    duration_ms=ms,
                )
            )

        if now - datetime.fromisoformat(event["created_at"]) > self._max_age:
            logged("expired", None, f"given up after {self._max_age} without delivery", 0)
            log.warning("webhook_expired", subscription=subscription.id, event_id=event["id"])
            return
        body = event_body(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"imprint-webhooks/{__version__}",
            EVENT_ID_HEADER: event["id"],
            EVENT_TYPE_HEADER: event["type"],
            ATTEMPT_HEADER: str(attempt),
            **signed_headers(self._store.secret_of(subscription.id), int(now.timestamp()), body),
        }
        started = time.monotonic()
        try:
            response = httpx.post(
                subscription.url,
                content=body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
            logged("failed", None, error, _ms(started))
            self._paused[subscription.id] = self._clock.now() + PAUSE
            raise DeliveryFailed(f"{subscription.id}: {error}") from None
        if 200 <= response.status_code < 300:
            logged("delivered", response.status_code, None, _ms(started))
            self._paused.pop(subscription.id, None)
            return
        error = f"HTTP {response.status_code}"
        logged("failed", response.status_code, error, _ms(started))
        self._paused[subscription.id] = self._clock.now() + PAUSE
        raise DeliveryFailed(f"{subscription.id}: {error}")


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
