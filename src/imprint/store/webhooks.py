"""Webhook subscriptions, their delivery log, expiry marks, provisioning hooks and the
claims hooks added to devices, on SQL."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.engine import Engine, RowMapping

from imprint.clock import Clock
from imprint.errors import NotFound
from imprint.pki.records import CertificateStatus
from imprint.sealing import SecretBox
from imprint.store.cache import ReadCache
from imprint.store.db import reading, writing
from imprint.store.tables import (
    certificates,
    device_claims,
    provisioning_hooks,
    webhook_deliveries,
    webhook_expiry_marks,
    webhook_subscriptions,
)
from imprint.webhooks.model import Delivery, ProvisioningHook, Subscription

__all__ = ["ExpiringCertificate", "SqlWebhookStore"]


@dataclass(frozen=True, slots=True)
class ExpiringCertificate:
    serial: str
    owner: str
    subject: str
    device_ref: str | None
    not_after: datetime


def _subscription(row: RowMapping) -> Subscription:
    return Subscription(
        id=row["id"],
        org_id=row["org_id"],
        url=row["url"],
        events=tuple(json.loads(row["events"])),
        enabled=bool(row["enabled"]),
        description=row["description"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery(row: RowMapping) -> Delivery:
    return Delivery(
        id=int(row["id"]),
        subscription_id=row["subscription_id"],
        org_id=row["org_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        attempt=int(row["attempt"]),
        at=row["at"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=int(row["duration_ms"]),
    )


def _hook(row: RowMapping) -> ProvisioningHook:
    return ProvisioningHook(
        org_id=row["org_id"],
        url=row["url"],
        timeout_seconds=float(row["timeout_seconds"]),
        on_failure=row["on_failure"],
        enabled=bool(row["enabled"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _secret_context(subscription_id: str) -> str:
    return f"webhook:{subscription_id}:secret"


def _hook_context(org_id: str) -> str:
    return f"provisioning-hook:{org_id}:secret"


class SqlWebhookStore:
    """Every table of webhooks; secrets sealed with the key-encryption key.

    Every registration asks for its organization's provisioning hook and for the enabled
    subscriptions (to emit its event): both answers come from read caches that every
    write of theirs forgets (store/cache.py), so a registration makes no query for them.
    """

    def __init__(self, engine: Engine, box: SecretBox, clock: Clock | None = None) -> None:
        self._engine = engine
        self._box = box
        self._subscriptions = ReadCache(engine, "webhook_subscriptions", clock=clock)
        self._hooks = ReadCache(engine, "provisioning_hooks", clock=clock)

    # Subscriptions ----------------------------------------------------------------------

    def add(self, subscription: Subscription, secret: str) -> None:
        s = subscription
        with writing(self._engine) as conn:
            self._subscriptions.changed(conn)
            conn.execute(
                insert(webhook_subscriptions).values(
                    id=s.id,
                    org_id=s.org_id,
                    url=s.url,
                    events=json.dumps(list(s.events)),
                    description=s.description,
                    enabled=s.enabled,
                    secret_sealed=self._box.seal(secret.encode(), _secret_context(s.id)),
                    created_by=s.created_by,
                    created_at=s.created_at,
                    updated_at=s.updated_at,
                )
            )

    def get(self, subscription_id: str) -> Subscription:
        """Raises NotFound."""
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(webhook_subscriptions).where(
                        webhook_subscriptions.c.id == subscription_id[:36]
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no webhook {subscription_id!r}")
        return _subscription(row)

    def search(
        self, owners: Collection[str] | None, *, org_id: str | None = None, limit: int = 100
    ) -> Sequence[Subscription]:
        """Subscriptions of ``owners`` (None: all), by organization and creation."""
        c = webhook_subscriptions.c
        statement = select(webhook_subscriptions).order_by(c.org_id, c.created_at, c.id)
        if owners is not None:
            statement = statement.where(c.org_id.in_(sorted(owners)))
        if org_id is not None:
            statement = statement.where(c.org_id == org_id)
        with reading(self._engine) as conn:
            rows = conn.execute(statement.limit(limit)).mappings().all()
        return [_subscription(r) for r in rows]

    def of_orgs(self, org_ids: Collection[str] | None) -> Sequence[Subscription]:
        """The enabled subscriptions of ``org_ids`` (None: of every organization)."""
        key = None if org_ids is None else tuple(sorted(org_ids))
        return self._subscriptions.get(("enabled", key), lambda: self._of_orgs(org_ids))

    def _of_orgs(self, org_ids: Collection[str] | None) -> Sequence[Subscription]:
        c = webhook_subscriptions.c
        statement = select(webhook_subscriptions).where(c.enabled.is_(True))
        if org_ids is not None:
            statement = statement.where(c.org_id.in_(sorted(org_ids)))
        with reading(self._engine) as conn:
            rows = conn.execute(statement.order_by(c.id)).mappings().all()
        return tuple(_subscription(r) for r in rows)

    def subscribed_orgs(self, event_type: str) -> set[str]:
        """The organizations with an enabled subscription to ``event_type``."""
        c = webhook_subscriptions.c
        with reading(self._engine) as conn:
            rows = conn.execute(select(c.org_id, c.events).where(c.enabled.is_(True))).all()
        return {org for org, events in rows if event_type in json.loads(events)}

    def replace(self, subscription: Subscription) -> None:
        s = subscription
        with writing(self._engine) as conn:
            self._subscriptions.changed(conn)
            conn.execute(
                update(webhook_subscriptions)
                .where(webhook_subscriptions.c.id == s.id)
                .values(
                    url=s.url,
                    events=json.dumps(list(s.events)),
                    description=s.description,
                    enabled=s.enabled,
                    updated_at=s.updated_at,
                )
            )

    def set_secret(self, subscription_id: str, secret: str, at: datetime) -> None:
        sealed = self._box.seal(secret.encode(), _secret_context(subscription_id))
        with writing(self._engine) as conn:
            self._subscriptions.changed(conn)
            conn.execute(
                update(webhook_subscriptions)
                .where(webhook_subscriptions.c.id == subscription_id)
                .values(secret_sealed=sealed, updated_at=at)
            )

    def secret_of(self, subscription_id: str) -> str:
        """Raises NotFound."""
        with reading(self._engine) as conn:
            sealed = conn.execute(
                select(webhook_subscriptions.c.secret_sealed).where(
                    webhook_subscriptions.c.id == subscription_id
                )
            ).scalar_one_or_none()
        if sealed is None:
            raise NotFound(f"no webhook {subscription_id!r}")
        return self._box.open(bytes(sealed), _secret_context(subscription_id)).decode()

    def remove(self, subscription_id: str) -> None:
        with writing(self._engine) as conn:
            self._subscriptions.changed(conn)
            conn.execute(
                delete(webhook_subscriptions).where(webhook_subscriptions.c.id == subscription_id)
            )

    # The delivery log -------------------------------------------------------------------

    def record(self, delivery: Delivery) -> None:
        d = delivery
        with writing(self._engine) as conn:
            conn.execute(
                insert(webhook_deliveries).values(
                    subscription_id=d.subscription_id,
                    org_id=d.org_id,
                    event_id=d.event_id,
                    event_type=d.event_type,
                    attempt=d.attempt,
                    at=d.at,
                    outcome=d.outcome,
                    status_code=d.status_code,
                    error=None if d.error is None else d.error[:500],
                    duration_ms=d.duration_ms,
                )
            )

    def attempts(self, subscription_id: str, event_id: str) -> int:
        """How many attempts of this event to this subscription are logged."""
        c = webhook_deliveries.c
        with reading(self._engine) as conn:
            count = conn.execute(
                select(func.count()).where(
                    c.subscription_id == subscription_id, c.event_id == event_id
                )
            ).scalar_one()
        return int(count)

    def deliveries(
        self,
        owners: Collection[str] | None,
        *,
        subscription_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> Sequence[Delivery]:
        """The newest attempts first (``before``: an id of the previous page)."""
        c = webhook_deliveries.c
        statement = select(webhook_deliveries).order_by(c.id.desc()).limit(limit)
        if owners is not None:
            statement = statement.where(c.org_id.in_(sorted(owners)))
        if subscription_id is not None:
            statement = statement.where(c.subscription_id == subscription_id)
        if before is not None:
            statement = statement.where(c.id < before)
        with reading(self._engine) as conn:
            rows = conn.execute(statement).mappings().all()
        return [_delivery(r) for r in rows]

    # Certificate expiry -----------------------------------------------------------------

    def expiring(
        self,
        now: datetime,
        until: datetime,
        owners: Collection[str],
        limit: int,
        *,
        unmarked: int,
    ) -> Sequence[ExpiringCertificate]:
        """Issued certificates of ``owners`` valid now, expiring by ``until``, without a
        mark for the threshold ``unmarked``."""
        c = certificates.c
        m = webhook_expiry_marks.c
        marked = exists().where(m.serial == c.serial, m.threshold_days == unmarked)
        statement = (
            select(c.serial, c.owner, c.subject, c.device_ref, c.not_after)
            .where(
                c.status == CertificateStatus.ISSUED.value,
                c.not_after > now,
                c.not_after <= until,
                c.owner.in_(sorted(owners)),
                ~marked,
            )
            .order_by(c.not_after, c.serial)
            .limit(limit)
        )
        with reading(self._engine) as conn:
            rows = conn.execute(statement).all()
        return [ExpiringCertificate(*row) for row in rows]

    def marks(self, serials: Collection[str]) -> dict[str, set[int]]:
        """The thresholds already notified, per serial."""
        c = webhook_expiry_marks.c
        found: dict[str, set[int]] = {}
        if not serials:
            return found
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(c.serial, c.threshold_days).where(c.serial.in_(sorted(serials)))
            ).all()
        for serial, days in rows:
            found.setdefault(serial, set()).add(int(days))
        return found

    def mark(self, serial: str, thresholds: Collection[int], at: datetime) -> None:
        with writing(self._engine) as conn:
            for days in sorted(thresholds):
                conn.execute(
                    insert(webhook_expiry_marks).values(serial=serial, threshold_days=days, at=at)
                )

    # Provisioning hooks -----------------------------------------------------------------

    def put_hook(self, hook: ProvisioningHook, secret: str | None) -> None:
        """Insert or replace the hook of its organization (``secret`` None: keep it)."""
        h = hook
        values: dict[str, object] = {
            "url": h.url,
            "timeout_seconds": h.timeout_seconds,
            "on_failure": h.on_failure,
            "enabled": h.enabled,
            "updated_at": h.updated_at,
        }
        if secret is not None:
            values["secret_sealed"] = self._box.seal(secret.encode(), _hook_context(h.org_id))
        with writing(self._engine) as conn:
            self._hooks.changed(conn)
            changed = conn.execute(
                update(provisioning_hooks)
                .where(provisioning_hooks.c.org_id == h.org_id)
                .values(**values)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(provisioning_hooks).values(
                        org_id=h.org_id,
                        created_by=h.created_by,
                        created_at=h.created_at,
                        **values,
                    )
                )

    def hook(self, org_id: str) -> ProvisioningHook | None:
        return self._hooks.get(org_id, lambda: self._hook(org_id))

    def any_hook(self) -> bool:
        """Whether some organization has an enabled provisioning hook (a network call
        during provisioning). Cached like the hooks themselves."""
        return self._hooks.get(("any",), self._any_hook)

    def _any_hook(self) -> bool:
        query = select(exists().where(provisioning_hooks.c.enabled.is_(True)))
        with reading(self._engine) as conn:
            return bool(conn.execute(query).scalar())

    def _hook(self, org_id: str) -> ProvisioningHook | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(provisioning_hooks).where(provisioning_hooks.c.org_id == org_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else _hook(row)

    def hook_secret(self, org_id: str) -> str:
        with reading(self._engine) as conn:
            sealed = conn.execute(
                select(provisioning_hooks.c.secret_sealed).where(
                    provisioning_hooks.c.org_id == org_id
                )
            ).scalar_one()
        return self._box.open(bytes(sealed), _hook_context(org_id)).decode()

    def remove_hook(self, org_id: str) -> None:
        with writing(self._engine) as conn:
            self._hooks.changed(conn)
            conn.execute(delete(provisioning_hooks).where(provisioning_hooks.c.org_id == org_id))

    # Claims hooks added to devices ------------------------------------------------------

    def save_claims(
        self,
        device_ref: str,
        owner: str,
        attributes: Mapping[str, str],
        services: Mapping[str, str],
        at: datetime,
    ) -> None:
        values = {
            "owner": owner,
            "attributes": json.dumps(dict(attributes), sort_keys=True),
            "services": json.dumps(dict(services), sort_keys=True),
            "updated_at": at,
        }
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(device_claims)
                .where(device_claims.c.device_ref == device_ref)
                .values(**values)
            ).rowcount
            if not changed:
                conn.execute(insert(device_claims).values(device_ref=device_ref, **values))

    def claims_of(self, device_ref: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The (attributes, services) a hook added to the device, if any."""
        with reading(self._engine) as conn:
            row = conn.execute(
                select(device_claims.c.attributes, device_claims.c.services).where(
                    device_claims.c.device_ref == device_ref
                )
            ).first()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))
