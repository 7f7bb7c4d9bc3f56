"""The provisioning hook: an organization's URL asked, during a registration and before
anything is signed, whether the device may have its certificate.

The request is a signed POST (the same headers as a webhook, with the event type
``provisioning.hook`` and the request id as the event id) of the registration's facts;
the answer is ``{"decision": "allow"}``, ``{"decision": "allow", "claims": {...}}`` or
``{"decision": "deny", "reason": "..."}`` with status 200. A hook that does not answer
within its timeout, cannot be reached, or answers anything else is a failure, decided
by the hook's ``on_failure`` (``deny`` by default).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING

import httpx

from imprint import __version__
from imprint.errors import InvalidValue
from imprint.logs import get_logger
from imprint.provisioning.hooks import Claims, RegistrationFacts, Verdict, parse_claims
from imprint.webhooks.model import ProvisioningHook
from imprint.webhooks.signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, signed_headers

if TYPE_CHECKING:
    from imprint.store.webhooks import SqlWebhookStore

__all__ = ["HOOK_EVENT", "HttpProvisioningHook"]

log = get_logger(__name__)

HOOK_EVENT = "provisioning.hook"
MAX_REASON = 200
MAX_ANSWER = 65536


class HttpProvisioningHook:
    """Implements :class:`imprint.provisioning.hooks.RegistrationHook` over HTTP."""

    def __init__(self, store: SqlWebhookStore) -> None:
        self._store = store

    def applies(self, owner: str) -> bool:
        hook = self._store.hook(owner)
        return hook is not None and hook.enabled

    def consult(self, facts: RegistrationFacts) -> Verdict | None:
        hook = self._store.hook(facts.owner)
        if hook is None or not hook.enabled:
            return None
        body = json.dumps(facts.as_json(), sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"imprint-hooks/{__version__}",
            EVENT_ID_HEADER: facts.request_id,
            EVENT_TYPE_HEADER: HOOK_EVENT,
            **signed_headers(self._store.hook_secret(hook.org_id), int(facts.at.timestamp()), body),
        }
        started = time.monotonic()
        try:
            response = httpx.post(
                hook.url,
                content=body,
                headers=headers,
                timeout=hook.timeout_seconds,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return self._failed(hook, facts, f"timed out after {hook.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return self._failed(hook, facts, f"unreachable ({exc.__class__.__name__})")
        if time.monotonic() - started > hook.timeout_seconds:
            return self._failed(hook, facts, f"timed out after {hook.timeout_seconds:g} s")
        if response.status_code != 200:
            return self._failed(hook, facts, f"answered HTTP {response.status_code}")
        try:
            return _verdict(response.content)
        except InvalidValue as exc:
            return self._failed(hook, facts, f"answered no valid decision: {exc.message}")

    @staticmethod
    def _failed(hook: ProvisioningHook, facts: RegistrationFacts, why: str) -> Verdict:
        allowed = hook.on_failure == "allow"
        log.warning(
            "provisioning_hook_failed",
            org=hook.org_id,
            request_id=facts.request_id,
            failure=why,
            on_failure=hook.on_failure,
        )
        reason = None if allowed else f"the provisioning hook failed: {why}"
        return Verdict(allowed=allowed, reason=reason, failure=why)

    def remember(self, device_ref: str, owner: str, claims: Claims, at: datetime) -> None:
        self._store.save_claims(device_ref, owner, claims.attributes, claims.services, at)


def _verdict(content: bytes) -> Verdict:
    if len(content) > MAX_ANSWER:
        raise InvalidValue(f"more than {MAX_ANSWER} bytes")
    try:
        answer = json.loads(content)
    except ValueError:
        raise InvalidValue("not JSON") from None
    if not isinstance(answer, dict):
        raise InvalidValue("not a JSON object")
    decision = answer.get("decision")
    if decision == "deny":
        reason = answer.get("reason")
        text = reason[:MAX_REASON] if isinstance(reason, str) and reason else None
        return Verdict(allowed=False, reason=text or "refused by the provisioning hook")
    if decision == "allow":
        return Verdict(allowed=True, claims=parse_claims(answer.get("claims")))
    raise InvalidValue('"decision" is neither "allow" nor "deny"')
