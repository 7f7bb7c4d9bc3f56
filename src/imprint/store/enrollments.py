"""Enrollments on SQL; pre-shared keys and group keys are sealed with the KEK."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.clock import Clock
from imprint.errors import Conflict, NotFound
from imprint.provisioning.channels import ChannelTemplate, KeyDelivery
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
    X509Material,
)
from imprint.provisioning.hub import HubProvider
from imprint.sealing import SecretBox
from imprint.store.cache import ReadCache
from imprint.store.db import Prepared, guarded, reading, writing
from imprint.store.tables import enrollments

__all__ = ["SqlEnrollmentStore"]

_GET = select(enrollments).where(enrollments.c.id == bindparam("id"))
# A registration's lookup of the device's own enrollments (the registration_id index).
_NAMING = Prepared(
    select(enrollments)
    .where(
        enrollments.c.registration_id == bindparam("registration_id"),
        enrollments.c.mechanism == bindparam("mechanism"),
        enrollments.c.kind == EnrollmentKind.INDIVIDUAL.value,
    )
    .order_by(enrollments.c.id)
)


def _channel_json(template: ChannelTemplate | None) -> str | None:
    if template is None:
        return None
    return json.dumps(
        {"fields": dict(template.fields), "name": template.name, "delivery": template.delivery}
    )


def _channel_template(text: str | None) -> ChannelTemplate | None:
    if text is None:
        return None
    data = json.loads(text)
    return ChannelTemplate(
        fields=data["fields"], name=data["name"], delivery=KeyDelivery(data["delivery"])
    )


def _hub_json(provider: HubProvider | None) -> str | None:
    """The provider without its secret (that is sealed in its own column)."""
    if provider is None:
        return None
    return json.dumps(
        {
            "name": provider.name,
            "client_id": provider.client_id,
            "scopes": list(provider.scopes),
            "audience": provider.audience,
            "token_url": provider.token_url,
        }
    )


class SqlEnrollmentStore:
    """Implements :class:`imprint.provisioning.enrollments.EnrollmentStore`."""

    def __init__(self, engine: Engine, box: SecretBox, clock: Clock | None = None) -> None:
        self._engine = engine
        self._box = box
        self._cache = ReadCache(engine, "enrollments", clock=clock)

    def _row(self, enrollment: Enrollment) -> dict[str, Any]:
        psk = enrollment.pre_shared_key
        x509 = enrollment.x509
        return {
            "id": enrollment.id,
            "kind": enrollment.kind.value,
            "mechanism": enrollment.mechanism.value,
            "owner": enrollment.owner,
            "profile": enrollment.profile,
            "validity_days": enrollment.validity_days,
            "key_types": json.dumps(list(enrollment.key_types)),
            "device_id_rule": enrollment.device_id_rule.value,
            "device_id_pattern": enrollment.device_id_pattern,
            "registration_id": enrollment.registration_id,
            "manual_approval": enrollment.manual_approval,
            "pre_shared_key_sealed": None
            if psk is None
            else self._box.seal(psk.encode(), f"enrollment:{enrollment.id}:psk"),
            "services": json.dumps(dict(enrollment.services)),
            "enabled": enrollment.enabled,
            "valid_from": enrollment.valid_from,
            "valid_until": enrollment.valid_until,
            "quota": enrollment.quota,
            "x509": None
            if x509 is None
            else json.dumps(
                {
                    "certificate_chain": list(x509.certificate_chain),
                    "lead_certificate_name": x509.lead_certificate_name,
                    "accept_expired": x509.accept_expired,
                }
            ),
            "group_key_sealed": None
            if enrollment.group_key is None
            else self._box.seal(enrollment.group_key, f"enrollment:{enrollment.id}:group-key"),
            "reprovision": enrollment.reprovision.value,
            "renewal_grace_days": enrollment.renewal_grace_days,
            "channel": _channel_json(enrollment.channel),
            "hub": _hub_json(enrollment.hub),
            "hub_client_secret_sealed": None
            if enrollment.hub is None
            else self._box.seal(
                enrollment.hub.client_secret.encode(), f"enrollment:{enrollment.id}:hub-secret"
            ),
            "created_at": enrollment.created_at,
            "updated_at": enrollment.updated_at,
        }

    def _enrollment(self, row: RowMapping | Mapping[str, Any]) -> Enrollment:
        x509 = json.loads(row["x509"]) if row["x509"] else None
        psk = row["pre_shared_key_sealed"]
        group_key = row["group_key_sealed"]
        return Enrollment(
            id=row["id"],
            kind=EnrollmentKind(row["kind"]),
            mechanism=Mechanism(row["mechanism"]),
            owner=row["owner"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            profile=row["profile"],
            validity_days=row["validity_days"],
            key_types=tuple(json.loads(row["key_types"])),
            device_id_rule=DeviceIdRule(row["device_id_rule"]),
            device_id_pattern=row["device_id_pattern"],
            registration_id=row["registration_id"],
            manual_approval=bool(row["manual_approval"]),
            pre_shared_key=None
            if psk is None
            else self._box.open(psk, f"enrollment:{row['id']}:psk").decode(),
            services=json.loads(row["services"]),
            enabled=bool(row["enabled"]),
            valid_from=row["valid_from"],
            valid_until=row["valid_until"],
            quota=row["quota"],
            x509=None
            if x509 is None
            else X509Material(
                certificate_chain=tuple(x509["certificate_chain"]),
                lead_certificate_name=x509["lead_certificate_name"],
                accept_expired=x509["accept_expired"],
            ),
            group_key=None
            if group_key is None
            else self._box.open(group_key, f"enrollment:{row['id']}:group-key"),
            reprovision=ReprovisionPolicy(row["reprovision"]),
            renewal_grace_days=row["renewal_grace_days"],
            channel=_channel_template(row["channel"]),
            hub=self._hub(row),
        )

    def _hub(self, row: RowMapping | Mapping[str, Any]) -> HubProvider | None:
        if row["hub"] is None:
            return None
        data = json.loads(row["hub"])
        sealed = row["hub_client_secret_sealed"]
        secret = self._box.open(sealed, f"enrollment:{row['id']}:hub-secret")
        return HubProvider(
            name=data["name"],
            client_id=data["client_id"],
            client_secret=secret.decode(),
            scopes=tuple(data["scopes"]),
            audience=data["audience"],
            token_url=data["token_url"],
        )

    def add(self, enrollment: Enrollment) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                self._cache.changed(conn)
                conn.execute(enrollments.insert().values(**self._row(enrollment)))
        except IntegrityError:
            raise Conflict(f"an enrollment with id {enrollment.id!r} exists already") from None

    def get(self, enrollment_id: str) -> Enrollment:
        found = self._cache.get(("id", enrollment_id), lambda: self._get(enrollment_id))
        if found is None:
            raise NotFound(f"no enrollment {enrollment_id!r}")
        return found

    def _get(self, enrollment_id: str) -> Enrollment | None:
        with reading(self._engine) as conn:
            row = conn.execute(_GET, {"id": enrollment_id}).mappings().first()
        return None if row is None else self._enrollment(row)

    def replace(self, enrollment: Enrollment) -> None:
        values = self._row(enrollment)
        values.pop("created_at")
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            result = conn.execute(
                update(enrollments).where(enrollments.c.id == enrollment.id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFound(f"no enrollment {enrollment.id!r}")

    def remove(self, enrollment_id: str) -> None:
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            result = conn.execute(delete(enrollments).where(enrollments.c.id == enrollment_id))
            if result.rowcount == 0:
                raise NotFound(f"no enrollment {enrollment_id!r}")

    def any_external_hub(self) -> bool:
        """Whether some enrollment gets hub tokens from an external token endpoint (a
        network call during provisioning). Cached like the enrollments themselves."""
        return self._cache.get(("external-hub",), self._any_external_hub)

    def _any_external_hub(self) -> bool:
        query = select(enrollments.c.hub).where(enrollments.c.hub.is_not(None))
        with reading(self._engine) as conn:
            hubs = conn.execute(query).scalars().all()
        return any(json.loads(hub).get("token_url") for hub in hubs)

    def search(
        self,
        *,
        mechanism: Mechanism | None = None,
        owner: str | None = None,
        kind: EnrollmentKind | None = None,
        enabled: bool | None = None,
        limit: int = 100,
        owners: Collection[str] | None = None,
        after: str | None = None,
    ) -> Sequence[Enrollment]:
        """Enrollments by id; each filter given narrows the query (mechanism and enabled
        together use the (mechanism, enabled) index; ``owners``: of these organizations;
        ``after``: ids after this one, for the next page)."""
        key = (
            "search",
            mechanism,
            owner,
            kind,
            enabled,
            limit,
            None if owners is None else frozenset(owners),
            after,
        )
        return self._cache.get(
            key,
            lambda: self._search(mechanism, owner, kind, enabled, limit, owners, after),
        )

    def naming(self, mechanism: Mechanism, registration_id: str) -> Sequence[Enrollment]:
        """The individual enrollments of ``mechanism`` for the device ``registration_id``,
        enabled or not, by id: one indexed query, not cached (each device asks for its own
        once, and a registration's answers would only push the shared ones out)."""
        values = {"registration_id": registration_id, "mechanism": mechanism.value}
        with reading(self._engine) as conn:
            rows = _NAMING.rows(conn, values)
        return tuple(self._enrollment(row) for row in rows)

    def count(
        self,
        *,
        mechanism: Mechanism | None = None,
        owner: str | None = None,
        owners: Collection[str] | None = None,
    ) -> int:
        """How many enrollments :meth:`search` with these filters finds over all pages."""
        query = select(func.count()).select_from(enrollments)
        if owners is not None:
            query = query.where(enrollments.c.owner.in_(sorted(owners)))
        if mechanism is not None:
            query = query.where(enrollments.c.mechanism == mechanism.value)
        if owner is not None:
            query = query.where(enrollments.c.owner == owner)
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def _search(
        self,
        mechanism: Mechanism | None,
        owner: str | None,
        kind: EnrollmentKind | None,
        enabled: bool | None,
        limit: int,
        owners: Collection[str] | None,
        after: str | None = None,
    ) -> Sequence[Enrollment]:
        query = select(enrollments).order_by(enrollments.c.id).limit(limit)
        if after is not None:
            query = query.where(enrollments.c.id > after)
        if owners is not None:
            query = query.where(enrollments.c.owner.in_(sorted(owners)))
        if mechanism is not None:
            query = query.where(enrollments.c.mechanism == mechanism.value)
        if enabled is not None:
            query = query.where(enrollments.c.enabled == enabled)
        if owner is not None:
            query = query.where(enrollments.c.owner == owner)
        if kind is not None:
            query = query.where(enrollments.c.kind == kind.value)
        with reading(self._engine) as conn:
            return tuple(self._enrollment(row) for row in conn.execute(query).mappings())
