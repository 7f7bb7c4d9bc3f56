"""The audit log: who did what to which object, when, and how it ended.

Entries never hold a secret: :func:`scrub` replaces the value of every detail whose
name suggests one (password, secret, token, key, psk) before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = ["AuditEntry", "AuditLog", "AuditQuery", "Outcome", "scrub"]

Outcome = Literal["success", "denied", "failure"]
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"password|secret|token|passphrase|psk|(^|_)(key|code|verifier)$", re.I)


def scrub(details: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``details`` safe to store: secret-looking values are redacted, nested
    mappings are scrubbed too, and values are reduced to JSON scalars and lists."""
    clean: dict[str, Any] = {}
    for name, value in details.items():
        if _SECRET_NAME.search(name):
            clean[name] = REDACTED
        elif isinstance(value, Mapping):
            clean[name] = scrub(value)
        elif isinstance(value, list | tuple | set | frozenset):
            clean[name] = [v if isinstance(v, str | int | float | bool) else str(v) for v in value]
        elif value is None or isinstance(value, str | int | float | bool):
            clean[name] = value
        else:
            clean[name] = str(value)
    return clean


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    target_type: str
    target_id: str | None = None
    org_id: str | None = None
    outcome: Outcome = "success"
    details: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for :meth:`AuditLog.search`; ``org_ids`` None means every organization
    and instance-wide entries, a set means entries of those organizations only."""

    org_ids: set[str] | None = None
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


class AuditLog(Protocol):
    def write(self, entry: AuditEntry) -> None:
        """Append an entry (its details are scrubbed first)."""

    def search(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """Newest first."""
