"""Events into the outbox: one delivery message per interested subscription, written in
the transaction of the change that caused the event."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from imprint.clock import Clock
from imprint.outbox import Outbox
from imprint.pki.records import CertificateRecord
from imprint.tenancy.orgs import OrgTree

if TYPE_CHECKING:
    from imprint.store.webhooks import SqlWebhookStore

__all__ = ["WEBHOOK_DELIVERY", "WebhookEvents"]

#: The outbox kind of one event's delivery to one subscription.
WEBHOOK_DELIVERY = "webhook.delivery"


class WebhookEvents:
    """Implements :class:`imprint.provisioning.hooks.EventSink`.

    An event of organization X goes to the enabled subscriptions of X and of every
    organization above X that ask for its type (an admin of a parent sees its
    sub-organizations' devices). Each gets its own outbox message, carrying the event
    (the same id for every receiver) and the subscription's id.
    """

    def __init__(
        self,
        store: SqlWebhookStore,
        outbox: Outbox,
        orgs: Callable[[], OrgTree],
        clock: Clock,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._orgs = orgs
        self._clock = clock

    def emit(self, event_type: str, org_id: str, data: Mapping[str, Any]) -> None:
        subscriptions = [s for s in self._store.of_orgs(None) if s.wants(event_type)]
        if not subscriptions:  # the common case costs one small query
            return
        receivers = {org_id, *self._orgs().ancestors(org_id)}
        event = {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "created_at": self._clock.now().isoformat(),
            "org_id": org_id,
            "data": dict(data),
        }
        for subscription in subscriptions:
            if subscription.org_id in receivers:
                self._outbox.add(
                    WEBHOOK_DELIVERY, {"subscription_id": subscription.id, "event": event}
                )

    def certificate_revoked(self, record: CertificateRecord) -> None:
        """The ``certificate.revoked`` event of a revocation (an authority observer)."""
        if record.owner is None:
            return
        self.emit(
            "certificate.revoked",
            record.owner,
            {
                "serial": record.serial,
                "subject": record.subject,
                "device_ref": record.device_ref,
                "reason": record.revocation_reason,
                "revoked_at": None if record.revoked_at is None else record.revoked_at.isoformat(),
                "not_after": record.not_after.isoformat(),
            },
        )
