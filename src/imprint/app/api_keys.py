"""API key operations: admin bearer tokens for the whole instance.

Only the whole instance (another API key, or the command line) creates or lists keys.
They need the database alone, not the CA: ``imprint admin create`` works before
``imprint ca init``, so these operations run over a :class:`~imprint.runtime.Database`
as well as over a full runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from imprint.app.auditing import actor_of
from imprint.audit import AuditEntry
from imprint.auth.api_keys import ApiKey, IssuedApiKey, create_api_key
from imprint.clock import Clock
from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.audit import SqlAuditLog
from imprint.tenancy.access import Principal, require_instance_admin

__all__ = ["ApiKeyOperations", "KeyStores"]


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

    def create(self, principal: Principal, name: str) -> IssuedApiKey:
        """Create an admin key; its token is returned once and never stored.

        Raises:
            PermissionDenied: not the whole instance.
            InvalidValue: a bad name.
            Conflict: the name is taken.
        """
        require_instance_admin(principal, "an API key")
        with self._stores.transaction():
            issued = create_api_key(self._stores.api_keys, name, at=self._stores.clock.now())
            self._stores.audit.write(
                AuditEntry(
                    actor=actor_of(principal),
                    action="api_key.create",
                    target_type="api_key",
                    target_id=issued.key.name,
                    details={"key_id": issued.key.key_id, "role": issued.key.role},
                )
            )
        return issued
