"""One node at a time per duty: PostgreSQL session-level advisory locks.

Some background work must not run on every node at once: the outbox delivery rounds
(:data:`OUTBOX`), the MQTT broker's CRL and ACL refresh (:data:`BROKER_CRL`), and a
responder's periodic refresh (an OCSP responder asks for its own duty name). Each
server process asks :meth:`Leadership.leads` before each round; the first to ask takes
the duty's advisory lock on a connection of its own and keeps it while that connection
lives. When the leader dies (kill -9, a crash, a lost host), PostgreSQL ends its session
and with it the lock, and the next node to ask takes over: within a round (about a
second) when the process died, and within the server's TCP keepalive time when the host
vanished (see docs/deploy.md).

A leader that loses its lock connection stops leading at its next round and tries again.
Two leaders for a moment (the old one has not noticed yet) do no harm: outbox messages
are claimed with a lease and their handlers are idempotent, and a broker refresh rewrites
whole files.

On SQLite every process leads every duty, as before: they share one host and one file,
and the outbox's claims keep two rounds from running one message.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from imprint.store.db import lock_key

if TYPE_CHECKING:
    import psycopg

__all__ = ["BROKER_CRL", "OUTBOX", "WEBHOOKS", "Leadership"]

# The standard library's logger: `imprint serve` renders it like the rest, and a command
# line that never configured logging does not print it among its output.
log = logging.getLogger(__name__)

#: The outbox delivery rounds (and the housekeeping that goes with them).
OUTBOX = "outbox"
#: The periodic re-signing of the MQTT broker's CRL and ACL.
BROKER_CRL = "broker-crl"
#: Webhook deliveries and the search for certificates crossing an expiry threshold.
WEBHOOKS = "webhooks"


class Leadership:
    """The duties this process leads, on the database of ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self._shared = engine.dialect.name == "postgresql"
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def leads(self, duty: str) -> bool:
        """Whether this process leads ``duty`` now: it held it, or just took it. Blocks
        for at most a connection timeout; a database error means no."""
        if not self._shared:
            return True
        import psycopg  # PostgreSQL only: a SQLite process (and the CLI) never loads it

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._held.clear()
                    self._conn = psycopg.connect(
                        self._conninfo,
                        autocommit=True,
                        connect_timeout=5,
                        application_name="imprint-duties",
                    )
                if duty in self._held:
                    self._conn.execute("SELECT 1")  # the session, and so the lock, lives
                    return True
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (lock_key(f"imprint-duty:{duty}"),)
                ).fetchone()
            except psycopg.Error as exc:
                self._lost(exc)
                return False
            if row is not None and row[0] is True:
                self._held.add(duty)
                log.info("duty_taken duty=%s", duty)
                return True
            return False

    def _lost(self, exc: Exception) -> None:
        if self._held:
            log.warning(
                "duties_lost duties=%s error=%s", sorted(self._held), exc.__class__.__name__
            )
        self._held.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def held(self) -> frozenset[str]:
        """The duties this process held at its last check."""
        with self._lock:
            return frozenset(self._held)

    def close(self) -> None:
        """Give up every duty (the session ends, and its locks with it)."""
        with self._lock:
            self._held.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
