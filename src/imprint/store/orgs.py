"""Organizations on SQL."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.store.db import guarded, reading, writing
from imprint.store.tables import organizations
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
