"""API key operations: admin bearer tokens for the whole instance.

Only the whole instance (another API key, or the command line) creates, lists, rotates
and revokes keys.
They need the database alone, not the CA: ``imprint admin create`` works before
``imprint ca init``, so these operations run over a :class:`~imprint.runtime.Database`
as well as over a full runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from imprint.app.auditing import actor_of
from imprint.app.base import Page, page_of
from imprint.audit import AuditEntry
from imprint.auth.api_keys import ApiKey, IssuedApiKey, create_api_key, new_secret
from imprint.clock import Clock
from imprint.errors import InvalidValue, NotFound
from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.audit import SqlAuditLog
from imprint.tenancy.access import Principal, require_instance_admin

__all__ = ["MAX_LIFETIME", "ApiKeyOperations", "KeyStores"]

#: The longest lifetime a key may be given.
MAX_LIFETIME = timedelta(days=3653)


class KeyStores(Protocol):
    """What the operations need: a :class:`~imprint.runtime.Runtime` or a
    :class:`~imprint.runtime.Database`."""

    @property
    def api_keys(self) -> SqlApiKeyStore: ...

    @property
    def audit(self) -> SqlAuditLog: ...

    @property
    def clock(self) -> Clock: ...

    def transaction(self) -> AbstractContextManager[None]: ...


class ApiKeyOperations:
    def __init__(self, stores: KeyStores) -> None:
        self._stores = stores

    def list(self, principal: Principal) -> Sequence[ApiKey]:
        """Every key, by name (never a secret).

        Raises:
            PermissionDenied: not the whole instance.
        """
        require_instance_admin(principal, "an API key")
        return self._stores.api_keys.all()

    def page(
        self, principal: Principal, *, limit: int = 100, after: str | None = None
    ) -> Page[ApiKey]:
        """One page of the keys by name, with the total and the next page's cursor.

        Raises:
            PermissionDenied: not the whole instance.
        """
        return page_of(self.list(principal), lambda k: k.name, limit=limit, after=after)

    def show(self, principal: Principal, name: str) -> ApiKey:
        """One key by name (never its secret).

        Raises:
            PermissionDenied: not the whole instance.
            NotFound: no key of that name.
        """
        require_instance_admin(principal, "an API key")
        key = self._stores.api_keys.find_by_name(name) if len(name) <= 100 else None
        if key is None:
            raise NotFound(f"no API key named {name!r}")
        return key

    def create(
        self, principal: Principal, name: str, *, expires_in: timedelta | None = None
    ) -> IssuedApiKey:
        """Create an admin key; its token is returned once and never stored.

        Args:
            expires_in: how long it works (None: until revoked).

        Raises:
            PermissionDenied: not the whole instance.
            InvalidValue: a bad name or lifetime.
            Conflict: the name is taken.
        """
        require_instance_admin(principal, "an API key")
        now = self._stores.clock.now()
        with self._stores.transaction():
            issued = create_api_key(
                self._stores.api_keys, name, now=now, expires_at=_expiry(now, expires_in)
            )
            self._write(
                principal,
                "api_key.create",
                issued.key,
                role=issued.key.role,
                expires_at=_iso(issued.key.expires_at),
            )
        return issued

    def rotate(
        self, principal: Principal, name: str, *, expires_in: timedelta | None = None
    ) -> IssuedApiKey:
        """Give a key a new secret; the old token stops working at once. The expiry is
        ``expires_in`` from now, or kept when None.

        Raises:
            PermissionDenied: not the whole instance.
            NotFound: no key of that name.
            InvalidValue: a bad lifetime.
        """
        now = self._stores.clock.now()
        with self._stores.transaction():
            key = self.show(principal, name)
            expires_at = _expiry(now, expires_in) if expires_in is not None else key.expires_at
            token, digest = new_secret(key.key_id)
            self._stores.api_keys.set_secret(key.key_id, digest, expires_at)
            rotated = replace(key, secret_sha256=digest, expires_at=expires_at, last_used_at=None)
            self._write(principal, "api_key.rotate", rotated, expires_at=_iso(expires_at))
        return IssuedApiKey(key=rotated, token=token)

    def revoke(self, principal: Principal, name: str) -> ApiKey:
        """Revoke a key: it is deleted and refused from the next request on (the audit
        log keeps its history).

        Raises:
            PermissionDenied: not the whole instance.
            NotFound: no key of that name.
        """
        with self._stores.transaction():
            key = self.show(principal, name)
            self._stores.api_keys.remove(key.name)
            self._write(principal, "api_key.revoke", key)
        return key

    def _write(self, principal: Principal, action: str, key: ApiKey, **details: object) -> None:
        self._stores.audit.write(
            AuditEntry(
                actor=actor_of(principal),
                action=action,
                target_type="api_key",
                target_id=key.name,
                details={"key_id": key.key_id, **details},
            )
        )


def _expiry(now: datetime, expires_in: timedelta | None) -> datetime | None:
    if expires_in is None:
        return None
    if expires_in <= timedelta(0) or expires_in > MAX_LIFETIME:
        raise InvalidValue("expires_in: more than zero and at most 10 years")
    return now + expires_in


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
