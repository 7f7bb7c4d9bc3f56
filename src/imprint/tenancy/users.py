"""Users (people who log in) and their memberships: a role in an organization.

A membership reaches down the tree: an admin of ``acme`` is an admin of every
organization below ``acme`` too, unless a membership nearer to the object says more.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imprint.auth.passwords import hash_password
from imprint.errors import InvalidValue
from imprint.tenancy.roles import Role

__all__ = [
    "Membership",
    "User",
    "UserStore",
    "canonical_username",
    "create_user",
    "normalize_username",
    "set_password",
]

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,199}")


@dataclass(frozen=True, slots=True)
class Membership:
    user_id: str
    org_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str | None = None
    disabled: bool = False
    created_at: datetime | None = None
    memberships: Mapping[str, Role] | None = None
    #: Console sessions and access tokens issued before this are refused: set when the
    #: password changes and when the user is disabled.
    sessions_valid_after: datetime | None = None

    def session_outdated(self, issued_at: float) -> bool:
        """Whether a session or token issued at ``issued_at`` (POSIX seconds) was ended
        by a later password change or disabling (whole seconds, as JWT ``iat`` is)."""
        cutoff = self.sessions_valid_after
        return cutoff is not None and int(issued_at) < int(cutoff.timestamp())

    def __repr__(self) -> str:  # the hash stays out of logs
        return f"User(id={self.id!r}, username={self.username!r}, disabled={self.disabled})"


class UserStore(Protocol):
    def add(self, user: User, memberships: Sequence[Membership]) -> None:
        """Store a user and her first memberships in one transaction (Conflict: taken)."""

    def get(self, user_id: str) -> User:
        """The user with her memberships (NotFound)."""

    def find_by_username(self, username: str) -> User | None: ...

    def set_membership(self, user_id: str, org_id: str, role: Role | None) -> None:
        """Give a role in an organization, or take the membership away (None)."""

    def set_password(self, user_id: str, password_hash: str, at: datetime) -> None:
        """Replace the password hash; sessions issued before ``at`` end (NotFound)."""

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        """Disable or enable the user; disabling ends her sessions (NotFound)."""

    def in_orgs(self, org_ids: set[str] | None, limit: int) -> Sequence[User]:
        """Users with a membership in one of ``org_ids`` (None: every user)."""


def canonical_username(username: str) -> str:
    """A user name as stored and compared: trimmed, in lower case (not checked)."""
    return username.strip().lower()


def normalize_username(username: str) -> str:
    """Lower-case and check a user name (usually an e-mail address).

    Raises:
        InvalidValue: not 1 to 200 of ``a-z 0-9 . _ @ + -``.
    """
    value = canonical_username(username)
    if not _USERNAME.fullmatch(value):
        raise InvalidValue("username: 1 to 200 of letters, digits and . _ @ + - (an e-mail)")
    return value


def create_user(
    store: UserStore,
    username: str,
    password: str,
    *,
    org_id: str,
    role: Role,
    at: datetime,
) -> User:
    """Create a user with a password and a first membership.

    Raises:
        InvalidValue: a bad user name or password.
        Conflict: the user name is taken.
    """
    user = User(
        id=f"usr-{secrets.token_hex(8)}",
        username=normalize_username(username),
        password_hash=hash_password(password),
        created_at=at.replace(microsecond=0),
        memberships={org_id: role},
    )
    store.add(user, [Membership(user.id, org_id, role)])
    return user


def set_password(store: UserStore, user_id: str, password: str, *, at: datetime) -> datetime:
    """Give the user a new password; sessions and tokens issued before ``at`` end.

    Returns:
        When the password changed.

    Raises:
        InvalidValue: the password breaks the policy.
        NotFound: no such user.
    """
    password_hash = hash_password(password)
    store.set_password(user_id, password_hash, at)
    return at
