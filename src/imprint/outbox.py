"""The transactional outbox: effects that must follow a commit, delivered until done.

An operation that needs something to happen once its change has committed (the MQTT
broker told about a revocation, later a webhook) does not do it after the commit, where
a crash would lose it: it adds a message to the outbox inside its own transaction. The
message commits with the change or not at all. Then:

- the process that committed delivers it at once (:func:`imprint.store.db.after_commit`),
  so effects are as prompt as before;
- every server process runs :meth:`Outbox.deliver` every second, which picks up what
  is due: messages whose prompt delivery failed (retried with backoff) and messages of a
  process that died first (kill -9, power loss), on the next start at the latest.

A kind registered as ``background`` (webhooks: an HTTP call to a receiver that may be
slow) is never delivered in the committing process, nor in the rounds of the others:
its messages are due at once and delivered by :meth:`Outbox.deliver` with
``background=True``, which the server runs in a round of its own, off every request's
path and without holding up the broker's revocations.

Delivery is at least once. A new message is due :data:`PROMPT_GRACE` after it was
written, which leaves it to its own process's prompt delivery; the rounds claim what is
due for a :data:`LEASE` before running its handler, so two rounds don't run one message
at once, and mark it done after. A process that dies mid-delivery leaves the message to
be delivered again. Handlers are idempotent (they recompute state, e.g. rewrite the
whole CRL file), since a message may now and then be delivered twice.

A handler returns the changes of state it made (:class:`~imprint.audit.StateChange`),
none when it found nothing to change. Each is written to the audit log with the actor
:data:`~imprint.audit.OUTBOX_ACTOR` (``system:outbox``), in one transaction with the
mark that the message is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from imprint.audit import OUTBOX_ACTOR, AuditLog, StateChange
from imprint.logs import get_logger

__all__ = ["Handler", "Message", "Outbox", "OutboxStore", "backoff"]

log = get_logger(__name__)

#: How long a claimed message is left to its deliverer before another may take it.
LEASE = timedelta(seconds=60)
#: How long a new message is left to the prompt delivery of the process that wrote it.
PROMPT_GRACE = timedelta(seconds=5)
#: Retries wait 2, 4, 8 ... seconds, at most this long.
MAX_BACKOFF = timedelta(minutes=5)
#: Delivered messages are kept this long (to look into), then deleted.
KEEP_DONE = timedelta(days=7)

#: Delivers one message's payload; returns the changes of state it made (None: none).
Handler = Callable[[Mapping[str, Any]], Sequence[StateChange] | None]


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int  # including the delivery this claim is for


class OutboxStore(Protocol):
    def add(self, kind: str, payload: Mapping[str, Any], at: datetime, due: datetime) -> int:
        """Insert a message, in the caller's unit of work; its id."""

    def claim(self, kinds: Collection[str], now: datetime, until: datetime) -> Sequence[Message]:
        """Take the due, undelivered messages of ``kinds`` until ``until``: no other round
        takes them meanwhile."""

    def undelivered_of(self, ids: Collection[int]) -> Sequence[Message]:
        """The messages of ``ids`` not delivered yet (due or not)."""

    def done(self, message_id: int, at: datetime) -> None: ...

    def retry(self, message_id: int, attempts: int, due: datetime, error: str) -> None:
        """Record a failed attempt (``attempts`` so far); try again at ``due``."""

    def purge(self, done_before: datetime) -> int:
        """Delete messages delivered before ``done_before``; how many."""

    def undelivered(self) -> int:
        """How many messages are not delivered yet."""


def backoff(attempts: int) -> timedelta:
    """The wait before the next try after ``attempts`` failed ones."""
    return min(timedelta(seconds=2 ** min(attempts, 20)), MAX_BACKOFF)


def _now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """Adds messages inside transactions and delivers them to their handlers.

    Args:
        store: where messages live.
        after_commit: runs a callable once the active unit of work has committed (at
            once without one); used for the prompt delivery.
        clock: the current time.
        audit: where the changes of state deliveries make are recorded.
        transaction: one unit of work, for a delivery's audit entries and its done mark.
    """

    def __init__(
        self,
        store: OutboxStore,
        after_commit: Callable[[Callable[[], object]], None],
        clock: Callable[[], datetime] = _now,
        *,
        audit: AuditLog | None = None,
        transaction: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._store = store
        self._after_commit = after_commit
        self._clock = clock
        self._audit = audit
        self._transaction = transaction or contextlib.nullcontext
        self._handlers: dict[str, Handler] = {}
        self._background: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler, *, background: bool = False) -> None:
        """Deliver messages of ``kind`` to ``handler`` (at composition, before serving);
        ``background``: only in the background round (see the module's docstring)."""
        (self._background if background else self._handlers)[kind] = handler

    def add(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Write a message in the caller's transaction; deliver it once that commits
        (a background kind: in the next background round)."""
        now = self._clock()
        if kind in self._background:
            self._store.add(kind, payload, now, now)
            return
        message_id = self._store.add(kind, payload, now, now + PROMPT_GRACE)
        if kind in self._handlers:
            self._after_commit(partial(self.deliver, (message_id,)))

    def deliver(self, ids: Collection[int] | None = None, *, background: bool = False) -> int:
        """Deliver what is due, or the messages of ``ids`` (the prompt delivery, due or
        not); how many were delivered. ``background``: the due messages of the
        background kinds instead.

        A handler that raises leaves its message for a retry after :func:`backoff`.
        Messages of kinds this process has no handler for are left to one that has.
        """
        handlers = self._background if background else self._handlers
        if not handlers:
            return 0
        if ids is None:
            now = self._clock()
            messages = self._store.claim(handlers, now, now + LEASE)
        else:
            messages = self._store.undelivered_of(ids)
        delivered = 0
        for message in messages:
            if message.kind not in handlers:
                continue
            try:
                changes = handlers[message.kind](message.payload) or ()
            except Exception as exc:
                error = f"{exc.__class__.__name__}: {exc}"[:500]
                due = self._clock() + backoff(message.attempts)
                self._store.retry(message.id, message.attempts, due, error)
                log.warning(
                    "outbox_delivery_failed",
                    id=message.id,
                    kind=message.kind,
                    attempts=message.attempts,
                    retry_at=due.isoformat(),
                    error=error,
                )
                continue
            with self._transaction():
                if self._audit is not None:
                    for change in changes:
                        entry = change.entry(OUTBOX_ACTOR)
                        details = {**entry.details, "outbox_message": message.id}
                        self._audit.write(replace(entry, details=details))
                self._store.done(message.id, self._clock())
            delivered += 1
        return delivered

    def purge(self) -> int:
        """Forget messages delivered more than :data:`KEEP_DONE` ago."""
        return self._store.purge(self._clock() - KEEP_DONE)

    def undelivered(self) -> int:
        return self._store.undelivered()
