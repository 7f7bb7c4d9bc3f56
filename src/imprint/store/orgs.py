"""Organizations on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Column, delete, exists, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.store.db import guarded, reading, writing
from imprint.store.tables import (
    certificates,
    channels,
    client_identities,
    client_psks,
    devices,
    enrollments,
    memberships,
    oauth_clients,
    organizations,
)
from imprint.tenancy.orgs import Organization

__all__ = ["SqlOrganizationStore"]


def _org(row: RowMapping) -> Organization:
    return Organization(
        id=row["id"], name=row["name"], parent_id=row["parent_id"], created_at=row["created_at"]
    )


class SqlOrganizationStore:
    """Implements :class:`imprint.tenancy.orgs.OrganizationStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, org: Organization) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                conn.execute(
                    organizations.insert().values(
                        id=org.id, parent_id=org.parent_id, name=org.name, created_at=org.created_at
                    )
                )
        except IntegrityError:
            raise Conflict(f"an organization {org.id!r} exists already") from None

    def get(self, org_id: str) -> Organization:
        with reading(self._engine) as conn:
            row = (
                conn.execute(select(organizations).where(organizations.c.id == org_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no organization {org_id!r}")
        return _org(row)

    def all(self) -> Sequence[Organization]:
        with reading(self._engine) as conn:
            rows = conn.execute(select(organizations).order_by(organizations.c.id)).mappings()
            return [_org(r) for r in rows]

    def rename(self, org_id: str, name: str) -> None:
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(organizations).where(organizations.c.id == org_id).values(name=name)
            ).rowcount
        if changed == 0:
            raise NotFound(f"no organization {org_id!r}")

    def remove(self, org_id: str) -> None:
        with writing(self._engine) as conn:
            gone = conn.execute(delete(organizations).where(organizations.c.id == org_id))
        if gone.rowcount == 0:
            raise NotFound(f"no organization {org_id!r}")

    def holdings(self, org_id: str, now: datetime) -> list[str]:
        """What still belongs to the organization, by kind (empty: it may be deleted).

        Valid certificates issued for it count; expired and revoked ones do not.
        """
        checks: list[tuple[str, Column[str]]] = [
            ("sub-organizations", organizations.c.parent_id),
            ("members", memberships.c.org_id),
            ("enrollments", enrollments.c.owner),
            ("devices", devices.c.owner),
            ("channels", channels.c.owner),
            ("OAuth clients", oauth_clients.c.org_id),
            ("client PSKs", client_psks.c.org_id),
            ("client identities", client_identities.c.owner),
        ]
        found = []
        with reading(self._engine) as conn:
            for what, column in checks:
                if conn.execute(select(exists().where(column == org_id))).scalar():
                    found.append(what)
            valid = exists().where(
                certificates.c.owner == org_id,
                certificates.c.status == "issued",
                certificates.c.not_after > now,
            )
            if conn.execute(select(valid)).scalar():
                found.append("valid certificates")
        return found
