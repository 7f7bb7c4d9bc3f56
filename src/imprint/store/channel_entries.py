"""Channel entries on SQL: numbered by the channel's ``last_entry_id`` counter.

Appending bumps the counter with ``UPDATE ... RETURNING`` first, which also returns
when the entry before came in. That write locks the channel's row (PostgreSQL) or the
database (SQLite) until the entry is in, so two concurrent writes to one channel get
consecutive ids and never the same one, and the rate limit compares against the entry
that really came before (read again by a statement of its own when the bump's snapshot
is older than that entry: :meth:`SqlEntryStore.append`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine, RowMapping

from imprint.channels.entries import ChannelRateLimited, Entry, EntryDraft
from imprint.clock import Clock, SystemClock
from imprint.errors import NotFound
from imprint.provisioning.channels import FIELD_NAMES
from imprint.store.db import Prepared, reading, writing
from imprint.store.tables import channel_entries, channels

__all__ = ["SqlEntryStore"]

#: The next entry id, and when the entry before it came in (None for the first).
_BUMP = Prepared(
    update(channels)
    .where(channels.c.id == bindparam("channel"))
    .values(last_entry_id=channels.c.last_entry_id + 1)
    .returning(
        channels.c.last_entry_id,
        select(channel_entries.c.created_at)
        .where(
            channel_entries.c.channel_id == channels.c.id,
            channel_entries.c.entry_id == channels.c.last_entry_id - 1,
        )
        .correlate(channels)
        .scalar_subquery()
        .label("previous_at"),
    )
)
#: The entry before, read again (see :meth:`SqlEntryStore.append`).
_PREVIOUS = Prepared(
    select(channel_entries.c.created_at).where(
        channel_entries.c.channel_id == bindparam("channel"),
        channel_entries.c.entry_id == bindparam("entry"),
    )
)
_UNBUMP = Prepared(
    update(channels)
    .where(channels.c.id == bindparam("channel"))
    .values(last_entry_id=channels.c.last_entry_id - 1)
)
_INSERT = Prepared(insert(channel_entries))


def _entry(row: RowMapping) -> Entry:
    return Entry(
        channel_id=row["channel_id"],
        entry_id=row["entry_id"],
        created_at=row["created_at"],
        fields={name: row[name] for name in FIELD_NAMES if row[name] is not None},
        latitude=row["latitude"],
        longitude=row["longitude"],
        elevation=row["elevation"],
        status=row["status"],
    )


class SqlEntryStore:
    """Implements :class:`imprint.channels.entries.EntryStore`."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def append(self, channel_id: int, draft: EntryDraft, *, min_interval: timedelta) -> Entry:
        with writing(self._engine) as conn:
            bumped = _BUMP.rows(conn, {"channel": channel_id})
            if not bumped:
                raise NotFound(f"no channel {channel_id}")
            entry_id = int(bumped[0]["last_entry_id"])
            previous: datetime | None = bumped[0]["previous_at"]
            if previous is None and entry_id > 1 and min_interval > timedelta(0):
                # Entries stay, so the one before is missing only from the statement's
                # snapshot: on PostgreSQL an UPDATE that waited for another write's row
                # lock bumps the row as that write left it, but its subquery reads as of
                # when it began, before that write's entry. A statement of its own sees it.
                again = _PREVIOUS.rows(conn, {"channel": channel_id, "entry": entry_id - 1})
                previous = again[0]["created_at"] if again else None
            at = self._clock.now()  # taken under the lock: entries are in time order
            if (
                min_interval > timedelta(0)
                and previous is not None
                and at - previous < min_interval
            ):
                wait = (min_interval - (at - previous)).total_seconds()
                # Undone by hand: in a unit of work the transaction goes on.
                _UNBUMP.execute(conn, {"channel": channel_id})
                raise ChannelRateLimited(
                    f"channel {channel_id} takes one entry per {min_interval.total_seconds():g} s",
                    retry_after=max(1, math.ceil(wait)),
                )
            values: dict[str, Any] = {
                "channel_id": channel_id,
                "entry_id": entry_id,
                "created_at": at,
                **{name: draft.fields.get(name) for name in FIELD_NAMES},
                "latitude": draft.latitude,
                "longitude": draft.longitude,
                "elevation": draft.elevation,
                "status": draft.status,
            }
            _INSERT.execute(conn, values)
        return Entry(
            channel_id=channel_id,
            entry_id=entry_id,
            created_at=at,
            fields=dict(draft.fields),
            latitude=draft.latitude,
            longitude=draft.longitude,
            elevation=draft.elevation,
            status=draft.status,
        )

    def latest(
        self,
        channel_id: int,
        results: int,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Sequence[Entry]:
        query = select(channel_entries).where(channel_entries.c.channel_id == channel_id)
        if start is not None:
            query = query.where(channel_entries.c.created_at >= start)
        if end is not None:
            query = query.where(channel_entries.c.created_at <= end)
        query = query.order_by(channel_entries.c.entry_id.desc()).limit(results)
        with reading(self._engine) as conn:
            found = [_entry(row) for row in conn.execute(query).mappings()]
        found.reverse()
        return found

    def last_entry_id(self, channel_id: int) -> int:
        query = select(channels.c.last_entry_id).where(channels.c.id == channel_id)
        with reading(self._engine) as conn:
            value = conn.execute(query).scalar_one_or_none()
        if value is None:
            raise NotFound(f"no channel {channel_id}")
        return int(value)
