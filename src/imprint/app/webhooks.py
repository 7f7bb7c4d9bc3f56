"""Webhook operations: subscriptions to an organization's events, their delivery log,
and the organization's provisioning hook, for every admin surface.

Viewers of the organization see its subscriptions, their delivery log and its hook;
its admins create, change, rotate and delete them. A subscription's signing secret (and
a hook's) is on what :meth:`WebhookOperations.create` and the rotations return, for
the caller to show once; it is never in the audit log or the delivery log, and the
audit names the receiver's host, not its full URL (which may carry a token).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from imprint.app.base import Operations
from imprint.app.scoping import scope_of
from imprint.errors import InvalidValue, NotFound
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role
from imprint.webhooks.model import (
    Delivery,
    HookFailure,
    ProvisioningHook,
    Subscription,
    check_events,
    check_url,
    new_secret,
)

__all__ = [
    "HookSpec",
    "IssuedHook",
    "IssuedSubscription",
    "SubscriptionPatch",
    "WebhookOperations",
]

#: A hook's timeout: at least this, at most ``MAX_HOOK_TIMEOUT`` seconds.
MIN_HOOK_TIMEOUT = 0.5
MAX_HOOK_TIMEOUT = 30.0
DEFAULT_HOOK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class IssuedSubscription:
    """A subscription with its signing secret (shown once)."""

    subscription: Subscription
    secret: str


@dataclass(frozen=True, slots=True)
class SubscriptionPatch:
    """What to change on a subscription (None: keep)."""

    url: str | None = None
    events: Sequence[str] | None = None
    enabled: bool | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class HookSpec:
    url: str
    timeout_seconds: float = DEFAULT_HOOK_TIMEOUT
    on_failure: HookFailure = "deny"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class IssuedHook:
    """A provisioning hook, with its signing secret when it was just made (or rotated)."""

    hook: ProvisioningHook
    secret: str | None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _description(value: str | None) -> str | None:
    if value is not None and len(value) > 200:
        raise InvalidValue("description: at most 200 characters")
    return value or None


class WebhookOperations(Operations):
    def _url(self, url: str) -> str:
        return check_url(url, allow_http_loopback=self._rt.settings.webhooks.allow_http_loopback)

    def _visible(self, principal: Principal, subscription_id: str, needed: Role) -> Subscription:
        subscription = self._rt.webhook_store.get(subscription_id)
        what = f"webhook {subscription_id!r}"
        authorize(principal, subscription.org_id, needed, self._rt.org_tree(), what=what)
        return subscription

    def _org(self, principal: Principal, org_id: str, needed: Role) -> None:
        tree = self._rt.org_tree()
        authorize(principal, org_id, needed, tree, what=f"organization {org_id!r}")
        if org_id not in tree:  # an instance admin passes authorize for any id
            raise NotFound(f"no organization {org_id!r}")

    def search(
        self, principal: Principal, *, org_id: str | None = None, limit: int = 100
    ) -> Sequence[Subscription]:
        """The subscriptions of the organizations the principal sees."""
        return self._rt.webhook_store.search(
            scope_of(self._rt, principal), org_id=org_id, limit=limit
        )

    def show(self, principal: Principal, subscription_id: str) -> Subscription:
        """One subscription (its secret is never shown again).

        Raises:
            NotFound: no such subscription, or one of an organization the caller does not see.
        """
        return self._visible(principal, subscription_id, Role.VIEWER)

    def create(
        self,
        principal: Principal,
        org_id: str,
        url: str,
        events: Sequence[str],
        *,
        description: str | None = None,
        enabled: bool = True,
    ) -> IssuedSubscription:
        """Subscribe ``url`` to ``events`` of the organization (and its sub-organizations).

        Raises:
            NotFound, PermissionDenied: the organization is not visible, or the principal
                is not an admin there.
            InvalidValue: not an https:// URL (see ``webhooks.allow_http_loopback``), no
                or an unknown event, a too long description.
        """
        with self._transaction():
            self._org(principal, org_id, Role.ADMIN)
            now = self._now()
            subscription = Subscription(
                id=str(uuid.uuid4()),
                org_id=org_id,
                url=self._url(url),
                events=check_events(list(events)),
                enabled=enabled,
                description=_description(description),
                created_by=principal.actor,
                created_at=now,
                updated_at=now,
            )
            secret = new_secret()
            self._rt.webhook_store.add(subscription, secret)
            self._audit(
                principal,
                "webhook.create",
                "webhook",
                subscription.id,
                org_id=org_id,
                host=_host(subscription.url),
                events=list(subscription.events),
                enabled=enabled,
            )
        return IssuedSubscription(subscription, secret)

    def update(
        self, principal: Principal, subscription_id: str, patch: SubscriptionPatch
    ) -> Subscription:
        """Change a subscription's URL, events, description or enabled flag.

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
            InvalidValue: as :meth:`create`.
        """
        with self._transaction():
            current = self._visible(principal, subscription_id, Role.ADMIN)
            changed = replace(
                current,
                url=current.url if patch.url is None else self._url(patch.url),
                events=current.events if patch.events is None else check_events(list(patch.events)),
                enabled=current.enabled if patch.enabled is None else patch.enabled,
                description=current.description
                if patch.description is None
                else _description(patch.description),
                updated_at=self._now(),
            )
            fields = [
                name
                for name in ("url", "events", "enabled", "description")
                if getattr(changed, name) != getattr(current, name)
            ]
            if fields:
                self._rt.webhook_store.replace(changed)
            self._audit(
                principal,
                "webhook.update",
                "webhook",
                subscription_id,
                org_id=current.org_id,
                changed=fields,
                host=_host(changed.url),
            )
        return changed

    def rotate_secret(self, principal: Principal, subscription_id: str) -> IssuedSubscription:
        """Give a subscription a new signing secret (the old one stops at once).

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
        """
        with self._transaction():
            current = self._visible(principal, subscription_id, Role.ADMIN)
            secret = new_secret()
            now = self._now()
            self._rt.webhook_store.set_secret(subscription_id, secret, now)
            self._audit(
                principal,
                "webhook.rotate_secret",
                "webhook",
                subscription_id,
                org_id=current.org_id,
            )
        return IssuedSubscription(replace(current, updated_at=now), secret)

    def delete(self, principal: Principal, subscription_id: str) -> Subscription:
        """Delete a subscription; deliveries not made yet are dropped, its log stays.

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
        """
        with self._transaction():
            current = self._visible(principal, subscription_id, Role.ADMIN)
            self._rt.webhook_store.remove(subscription_id)
            self._audit(
                principal,
                "webhook.delete",
                "webhook",
                subscription_id,
                org_id=current.org_id,
                host=_host(current.url),
            )
        return current

    def deliveries(
        self,
        principal: Principal,
        *,
        subscription_id: str | None = None,
        org_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> Sequence[Delivery]:
        """The delivery log (newest first) of the subscriptions the principal sees, of
        one organization's, or of one.

        Raises:
            NotFound: a named subscription or organization that is not visible.
        """
        if subscription_id is not None:
            self._visible(principal, subscription_id, Role.VIEWER)
        owners = scope_of(self._rt, principal)
        if org_id is not None:
            self._org(principal, org_id, Role.VIEWER)
            owners = {org_id}
        return self._rt.webhook_store.deliveries(
            owners,
            subscription_id=subscription_id,
            limit=limit,
            before=before,
        )

    # The provisioning hook ------------------------------------------------------------

    def hook(self, principal: Principal, org_id: str) -> ProvisioningHook:
        """The organization's provisioning hook.

        Raises:
            NotFound: the organization is not visible, or has no hook.
        """
        self._org(principal, org_id, Role.VIEWER)
        found = self._rt.webhook_store.hook(org_id)
        if found is None:
            raise NotFound(f"organization {org_id!r} has no provisioning hook")
        return found

    def set_hook(
        self, principal: Principal, org_id: str, spec: HookSpec, *, rotate_secret: bool = False
    ) -> IssuedHook:
        """Set the organization's provisioning hook, asked before every registration of
        its enrollments is signed. Its secret is made the first time (or rotated).

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
            InvalidValue: the URL, the timeout (0.5 to 30 s) or ``on_failure``.
        """
        if not MIN_HOOK_TIMEOUT <= spec.timeout_seconds <= MAX_HOOK_TIMEOUT:
            raise InvalidValue(
                f"timeout_seconds: from {MIN_HOOK_TIMEOUT:g} to {MAX_HOOK_TIMEOUT:g} seconds"
            )
        if spec.on_failure not in ("deny", "allow"):
            raise InvalidValue('on_failure: "deny" or "allow"')
        with self._transaction():
            self._org(principal, org_id, Role.ADMIN)
            url = self._url(spec.url)
            now = self._now()
            current = self._rt.webhook_store.hook(org_id)
            hook = ProvisioningHook(
                org_id=org_id,
                url=url,
                timeout_seconds=float(spec.timeout_seconds),
                on_failure=spec.on_failure,
                enabled=spec.enabled,
                created_by=current.created_by if current else principal.actor,
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            secret = new_secret() if current is None or rotate_secret else None
            self._rt.webhook_store.put_hook(hook, secret)
            self._audit(
                principal,
                "provisioning_hook.set",
                "organization",
                org_id,
                org_id=org_id,
                host=_host(url),
                timeout_seconds=hook.timeout_seconds,
                on_failure=hook.on_failure,
                enabled=hook.enabled,
                new_secret=secret is not None,
            )
        return IssuedHook(hook, secret)

    def remove_hook(self, principal: Principal, org_id: str) -> ProvisioningHook:
        """Remove the organization's provisioning hook: registrations no longer ask it.

        Raises:
            NotFound, PermissionDenied: not visible, no hook, or not an admin.
        """
        with self._transaction():
            self._org(principal, org_id, Role.ADMIN)
            current = self._rt.webhook_store.hook(org_id)
            if current is None:
                raise NotFound(f"organization {org_id!r} has no provisioning hook")
            self._rt.webhook_store.remove_hook(org_id)
            self._audit(
                principal, "provisioning_hook.remove", "organization", org_id, org_id=org_id
            )
        return current
