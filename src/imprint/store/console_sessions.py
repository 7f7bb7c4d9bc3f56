"""Console sessions ended before their expiry (signed out), on SQL.

A session cookie is sealed and self-contained; this table is what makes signing out
end the session on the server as well. Rows are kept until the session would have
expired anyway and are pruned by the next sign-out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from imprint.store.db import own_transaction, reading
from imprint.store.tables import ended_console_sessions

__all__ = ["SqlEndedSessions"]

_table = ended_console_sessions


class SqlEndedSessions:
    """Which console sessions (by the SHA-256 of their id) have been ended."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def end(self, session_sha256: str, expires_at: datetime, now: datetime) -> None:
        """Record the session as ended (again is fine) and forget the ones now expired.

        Its own commits, never a caller's unit of work: a sign-out holds whatever the
        request does next (call it before the unit's first write: on SQLite a unit that
        has written holds the database's write lock).
        """
        with own_transaction(self._engine) as conn:
            conn.execute(delete(_table).where(_table.c.expires_at <= now))
        try:
            with own_transaction(self._engine) as conn:
                conn.execute(
                    _table.insert().values(session_sha256=session_sha256, expires_at=expires_at)
                )
        except IntegrityError:
            pass  # ended already, by another request

    def is_ended(self, session_sha256: str) -> bool:
        query = select(exists().where(_table.c.session_sha256 == session_sha256))
        with reading(self._engine) as conn:
            return bool(conn.execute(query).scalar())
