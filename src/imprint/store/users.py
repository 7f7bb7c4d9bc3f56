"""Users and memberships on SQL; only an argon2 hash of each password is stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.store.db import guarded, reading, writing
from imprint.store.tables import memberships, users
from imprint.tenancy.roles import Role
from imprint.tenancy.users import Membership, User

__all__ = ["SqlUserStore"]


def _roles(conn: Connection, user_id: str) -> dict[str, Role]:
    rows = conn.execute(
        select(memberships.c.org_id, memberships.c.role).where(memberships.c.user_id == user_id)
    )
    return {org_id: Role(role) for org_id, role in rows}


def _user(conn: Connection, row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        disabled=row["disabled"],
        created_at=row["created_at"],
        memberships=_roles(conn, row["id"]),
        sessions_valid_after=row["sessions_valid_after"],
    )


class SqlUserStore:
    """Implements :class:`imprint.tenancy.users.UserStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, user: User, first: Sequence[Membership]) -> None:
        created = user.created_at or datetime.now(UTC)
        try:
            with writing(self._engine) as conn, guarded(conn):
                conn.execute(
                    users.insert().values(
                        id=user.id,
                        username=user.username,
                        password_hash=user.password_hash,
                        disabled=user.disabled,
                        created_at=created,
                    )
                )
                for m in first:
                    conn.execute(
                        memberships.insert().values(
                            user_id=m.user_id,
                            org_id=m.org_id,
                            role=m.role.value,
                            created_at=created,
                        )
                    )
        except IntegrityError:
            raise Conflict(f"a user named {user.username!r} exists already") from None

    def get(self, user_id: str) -> User:
        with reading(self._engine) as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
            if row is None:
                raise NotFound(f"no user {user_id!r}")
            return _user(conn, row)

    def find_by_username(self, username: str) -> User | None:
        with reading(self._engine) as conn:
            row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
            return None if row is None else _user(conn, row)

    def set_membership(self, user_id: str, org_id: str, role: Role | None) -> None:
        with writing(self._engine) as conn:
            if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise NotFound(f"no user {user_id!r}")
            where = (memberships.c.user_id == user_id) & (memberships.c.org_id == org_id)
            if role is None:
                conn.execute(delete(memberships).where(where))
                return
            changed = conn.execute(update(memberships).where(where).values(role=role.value))
            if changed.rowcount == 0:
                conn.execute(
                    memberships.insert().values(
                        user_id=user_id,
                        org_id=org_id,
                        role=role.value,
                        created_at=datetime.now(UTC),
                    )
                )

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        if disabled:
            self._update(user_id, disabled=True, sessions_valid_after=datetime.now(UTC))
        else:
            self._update(user_id, disabled=False)

    def set_password(self, user_id: str, password_hash: str, at: datetime) -> None:
        self._update(user_id, password_hash=password_hash, sessions_valid_after=at)

    def remove(self, user_id: str) -> None:
        """Delete a user and her memberships (the audit log keeps what she did)."""
        with writing(self._engine) as conn:
            conn.execute(delete(memberships).where(memberships.c.user_id == user_id))
            if conn.execute(delete(users).where(users.c.id == user_id)).rowcount == 0:
                raise NotFound(f"no user {user_id!r}")

    def _update(self, user_id: str, **values: object) -> None:
        with writing(self._engine) as conn:
            result = conn.execute(update(users).where(users.c.id == user_id).values(**values))
            if result.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")

    def in_orgs(
        self, org_ids: set[str] | None, limit: int, after: str | None = None
    ) -> Sequence[User]:
        """Members of ``org_ids`` (None: every user) by user name, after ``after``."""
        query = select(users).order_by(users.c.username).limit(limit)
        if org_ids is not None:
            members = select(memberships.c.user_id).where(memberships.c.org_id.in_(sorted(org_ids)))
            query = query.where(users.c.id.in_(members))
        if after is not None:
            query = query.where(users.c.username > after)
        with reading(self._engine) as conn:
            return [_user(conn, row) for row in conn.execute(query).mappings().all()]

    def count_in_orgs(self, org_ids: set[str] | None) -> int:
        query = select(func.count()).select_from(users)
        if org_ids is not None:
            members = select(memberships.c.user_id).where(memberships.c.org_id.in_(sorted(org_ids)))
            query = query.where(users.c.id.in_(members))
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())
