"""API keys: bearer tokens for administrators and automation.

A token reads ``imp_<key id>_<secret>``. The key id finds the record; the secret is
compared, in constant time, with the SHA-256 stored for it. The secrets are 256 random
bits, so a fast hash is the right tool (no password stretching needed).

A key may carry an expiry, after which it is refused; rotating it gives it a new secret
(the old token stops working at once); revoking it deletes it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from imprint.errors import AuthenticationRequired, InvalidValue

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "IssuedApiKey",
    "authenticate",
    "check_key_name",
    "create_api_key",
    "new_secret",
]

_TOKEN = re.compile(r"imp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
ROLES = ("admin",)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    secret_sha256: str
    role: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key and its token; the token is shown once and never stored."""

    key: ApiKey
    token: str


class ApiKeyStore(Protocol):
    def add(self, key: ApiKey) -> None: ...
    def find(self, key_id: str) -> ApiKey | None: ...
    def touch(self, key_id: str, at: datetime) -> None: ...
    def all(self) -> Sequence[ApiKey]: ...
    def count(self) -> int: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def check_key_name(name: str) -> str:
    """Raises InvalidValue unless a valid key name."""
    if not _NAME.fullmatch(name):
        raise InvalidValue("key name: letters, digits and . _ @ - only, at most 100 characters")
    return name


def new_secret(key_id: str) -> tuple[str, str]:
    """A fresh secret for ``key_id``: (its token, the SHA-256 to store)."""
    secret = secrets.token_urlsafe(32)
    return f"imp_{key_id}_{secret}", _digest(secret)


def create_api_key(
    store: ApiKeyStore,
    name: str,
    role: str = "admin",
    *,
    now: datetime | None = None,
    expires_at: datetime | None = None,
) -> IssuedApiKey:
    """Create and store a key (``expires_at``: when it stops working; None: never).

    Raises:
        InvalidValue: a bad name or role, or an expiry in the past.
        Conflict: the name is taken.
    """
    check_key_name(name)
    if role not in ROLES:
        raise InvalidValue(f"role must be one of {', '.join(ROLES)}")
    created = now or datetime.now(UTC)
    if expires_at is not None and expires_at <= created:
        raise InvalidValue("expires_at: a time in the future")
    key_id = secrets.token_hex(8)
    token, digest = new_secret(key_id)
    key = ApiKey(
        key_id=key_id,
        name=name,
        secret_sha256=digest,
        role=role,
        created_at=created,
        expires_at=expires_at,
    )
    store.add(key)
    return IssuedApiKey(key=key, token=token)


def authenticate(store: ApiKeyStore, token: str, now: datetime | None = None) -> ApiKey:
    """Return the key a bearer token belongs to (refused once expired at ``now``).

    Raises:
        AuthenticationRequired: malformed, unknown, wrong or expired token (one message
            for all but the expired).
    """
    match = _TOKEN.fullmatch(token)
    key = store.find(match.group(1)) if match else None
    # Compare even when the key is unknown so timing does not reveal which ids exist.
    expected = key.secret_sha256 if key else "0" * 64
    presented = _digest(match.group(2)) if match else "1" * 64
    if key is None or not hmac.compare_digest(expected, presented):
        raise AuthenticationRequired("invalid API key")
    if key.expired(now or datetime.now(UTC)):
        raise AuthenticationRequired("the API key has expired")
    return key
