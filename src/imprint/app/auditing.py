"""The one call that writes the audit log for a change.

An operation calls :func:`audit` after it has acted, inside its transaction (the entry
commits with the change it records), e.g.::

    audit(runtime, principal, "enrollment.create", "enrollment", enrollment.id,
          org_id=enrollment.owner)

``actor`` is the principal (an API key, a user, ``cli:<os user>``); ``details`` are
scrubbed of anything that looks like a secret before they are stored (see
:func:`imprint.audit.scrub`).
"""

from __future__ import annotations

from typing import Any

from imprint.audit import AuditEntry, Outcome
from imprint.auth.api_keys import ApiKey
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

__all__ = ["actor_of", "audit"]


def actor_of(actor: Principal | ApiKey | str) -> str:
    if isinstance(actor, Principal):
        return actor.actor
    if isinstance(actor, ApiKey):
        return f"api-key:{actor.name}"
    return actor


def audit(
    runtime: Runtime,
    actor: Principal | ApiKey | str,
    action: str,
    target_type: str,
    target_id: str | None = None,
    *,
    org_id: str | None = None,
    outcome: Outcome = "success",
    **details: Any,
) -> None:
    """Append one entry to the audit log."""
    runtime.audit.write(
        AuditEntry(
            actor=actor_of(actor),
            action=action,
            target_type=target_type,
            target_id=target_id,
            org_id=org_id,
            outcome=outcome,
            details=details,
        )
    )
