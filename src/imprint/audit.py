"""The audit log: who did what to which object, when, and how it ended.

Entries never hold a secret: :func:`scrub` replaces the value of every detail whose
name suggests one (password, secret, token, key, psk) before anything is stored.

The log is a hash chain, so that changing it behind imprint's back shows. Each entry
stores the hash of the entry before it (64 zeros for the first) and its own hash,
``SHA-256(prev_hash || canonical bytes of the entry)``, the previous hash as its 64
ASCII hex digits and the canonical bytes as :meth:`AuditRecord.canonical` makes them.
:func:`verify_chain` walks the log oldest first and names the first entry that was
edited, or whose predecessor was deleted or moved. Deleting the newest entries leaves
a shorter chain that is still whole: only a head hash kept elsewhere (an anchor, which
the verification reports) shows that.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from imprint.store.listing import Order

__all__ = [
    "GENESIS",
    "OUTBOX_ACTOR",
    "REASONS",
    "AuditEntry",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "BreakReason",
    "ChainBreak",
    "ChainReport",
    "Outcome",
    "StateChange",
    "chain_time",
    "records",
    "scrub",
    "verify_chain",
]

Outcome = Literal["success", "denied", "failure"]
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"password|secret|token|passphrase|psk|(^|_)(key|code|verifier)$", re.I)

#: The predecessor of the first entry.
GENESIS = "0" * 64

#: The actor of the changes the outbox's deliveries make (e.g. the broker's CRL rewritten).
OUTBOX_ACTOR = "system:outbox"


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
    at: datetime | None = None  # None: stamped by the log's clock when written
    id: int | None = None

    def sort_value(self, key: str) -> Any:
        """This entry's value of an audit sort key (``at`` is the entry's id, which
        follows the chain)."""
        return getattr(self, _SORT_FIELDS.get(key, "id"))


#: The entry's field of each key of the store's audit sort keys.
_SORT_FIELDS = {
    "at": "id",
    "actor": "actor",
    "action": "action",
    "target": "target_id",
    "outcome": "outcome",
}


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of state an automatic effect made (an outbox delivery), for the audit log.

    The effect reports one only when it changed something: a delivery that found
    everything as it should be reports nothing, so the log holds no no-ops.
    """

    action: str
    target_type: str
    target_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def entry(self, actor: str) -> AuditEntry:
        return AuditEntry(
            actor=actor,
            action=self.action,
            target_type=self.target_type,
            target_id=self.target_id,
            details=self.details,
        )


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
    offset: int = 0
    oldest_first: bool = False
    #: A key of the store's audit sort keys (``at``, ``actor``, ``action``, ``target``,
    #: ``outcome``); None: by entry, newest first unless ``oldest_first``.
    order: Order | None = None
    #: With ``order``: only the entries after this one (its
    #: :meth:`AuditEntry.sort_value` and its id) in that order, a keyset to read the
    #: log chunk after chunk.
    after: tuple[Any, int] | None = None


def chain_time(at: datetime) -> str:
    """``at`` as the chain hashes it: UTC to the microsecond, the precision SQLite's text
    and PostgreSQL's timestamptz both give back unchanged."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry exactly as stored: the fields its hash covers (``at`` as
    :func:`chain_time` writes it, ``details`` the stored JSON text) and the two hashes
    (None in a row that was written around imprint)."""

    id: int
    at: str
    actor: str
    action: str
    target_type: str
    target_id: str | None
    org_id: str | None
    outcome: str
    details: str
    prev_hash: str | None = None
    hash: str | None = None

    def canonical(self) -> bytes:
        """The covered fields as JSON: keys sorted, no whitespace, ASCII only."""
        fields = {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "org_id": self.org_id,
            "outcome": self.outcome,
            "details": self.details,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii")

    def around_id(self) -> tuple[bytes, bytes]:
        """The canonical JSON before and after the id's digits, whatever the id: for a
        writer that learns the id only where the entry is stored (PostgreSQL's
        ``imprint_audit_append``, migration 0023), ``before + str(id) + after`` is
        :meth:`canonical`. A string value's quotes are escaped, so the id's key is the
        only place ``"id":`` can occur."""
        before, _, after = replace(self, id=-1).canonical().partition(b'"id":-1')
        return before + b'"id":', after

    def chained_to(self, prev_hash: str) -> str:
        """This entry's hash when it follows the entry whose hash is ``prev_hash``."""
        return hashlib.sha256(prev_hash.encode("ascii") + self.canonical()).hexdigest()


#: Why an entry breaks the chain.
BreakReason = Literal["content_changed", "predecessor_mismatch", "hash_missing"]

REASONS: dict[BreakReason, str] = {
    "content_changed": "its content (or its hash) was changed",
    "predecessor_mismatch": "the entry before it is missing or not the one it was chained to",
    "hash_missing": "it has no hash: it was not written by imprint",
}


@dataclass(frozen=True, slots=True)
class ChainBreak:
    id: int
    reason: BreakReason


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of :func:`verify_chain`. ``entries`` counts the entries checked (up
    to and including a broken one); ``head`` is the newest entry's hash (64 zeros for
    an empty log), None when the chain is broken."""

    ok: bool
    entries: int
    head: str | None
    broken: ChainBreak | None = None


class AuditLog(Protocol):
    def write(self, entry: AuditEntry) -> None:
        """Append an entry (its details are scrubbed first)."""

    def search(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """Newest first (``oldest_first``: the other way)."""

    def count(self, query: AuditQuery) -> int:
        """How many entries match the filters of ``query``."""

    def page(self, after_id: int | None, limit: int) -> Sequence[AuditRecord]:
        """At most ``limit`` stored entries with an id above ``after_id``, oldest first."""


def records(log: AuditLog, page_size: int = 1000) -> Iterator[AuditRecord]:
    """Every stored entry, oldest first, read ``page_size`` at a time."""
    after: int | None = None
    while batch := log.page(after, page_size):
        yield from batch
        after = batch[-1].id


def verify_chain(log: AuditLog, page_size: int = 1000) -> ChainReport:
    """Check every entry against its predecessor and its own hash; stop at the first
    that does not hold."""
    head, checked = GENESIS, 0
    for record in records(log, page_size):
        checked += 1
        reason: BreakReason | None = None
        if record.hash is None or record.prev_hash is None:
            reason = "hash_missing"
        elif record.prev_hash != head:
            reason = "predecessor_mismatch"
        elif record.chained_to(head) != record.hash:
            reason = "content_changed"
        if reason is not None:
            return ChainReport(False, checked, None, ChainBreak(record.id, reason))
        assert record.hash is not None
        head = record.hash
    return ChainReport(True, checked, head)
