"""The periodic search for certificates coming within a threshold of their expiry.

For each threshold (smallest first), the issued certificates of organizations with a
``certificate.expiring`` subscription that expire within it and have no mark for it
are found in batches. Each gets marks for every threshold it has crossed and one event
naming the smallest, in one transaction: each threshold is told once per certificate,
and a certificate first seen 5 days before its expiry with thresholds 30, 7 and 1
gets one event (7 days), not two. The server runs this on one node at a time
(:data:`imprint.leadership.WEBHOOKS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING

from imprint.clock import Clock
from imprint.tenancy.orgs import OrgTree
from imprint.webhooks.events import WebhookEvents

if TYPE_CHECKING:
    from imprint.store.webhooks import SqlWebhookStore

__all__ = ["ExpiryWatch"]

EVENT = "certificate.expiring"
BATCH = 500


class ExpiryWatch:
    def __init__(
        self,
        store: SqlWebhookStore,
        events: WebhookEvents,
        orgs: Callable[[], OrgTree],
        clock: Clock,
        thresholds_days: Sequence[int],
        transaction: Callable[[], AbstractContextManager[object]],
    ) -> None:
        self._store = store
        self._events = events
        self._orgs = orgs
        self._clock = clock
        self._thresholds = sorted(set(thresholds_days))
        self._transaction = transaction

    def scan(self) -> int:
        """Queue the events now due; how many certificates were told about."""
        subscribed = self._store.subscribed_orgs(EVENT)
        if not subscribed or not self._thresholds:
            return 0
        tree = self._orgs()
        owners = set(subscribed)
        for org_id in subscribed:
            owners |= tree.descendants(org_id)
        now = self._clock.now()
        told = 0
        for threshold in self._thresholds:
            while True:
                found = self._store.expiring(
                    now, now + timedelta(days=threshold), owners, BATCH, unmarked=threshold
                )
                marks = self._store.marks([c.serial for c in found])
                for certificate in found:
                    left = certificate.not_after - now
                    crossed = {t for t in self._thresholds if left <= timedelta(days=t)}
                    crossed -= marks.get(certificate.serial, set())
                    with self._transaction():
                        self._store.mark(certificate.serial, crossed, now)
                        self._events.emit(
                            EVENT,
                            certificate.owner,
                            {
                                "serial": certificate.serial,
                                "subject": certificate.subject,
                                "device_ref": certificate.device_ref,
                                "not_after": certificate.not_after.isoformat(),
                                "days_left": round(left.total_seconds() / 86400, 2),
                                "threshold_days": min(crossed),
                            },
                        )
                    told += 1
                if len(found) < BATCH:
                    break
        return told
