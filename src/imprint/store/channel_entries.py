"""Channel entries on SQL: numbered by the channel's ``last_entry_id`` counter.

Appending bumps the counter with ``UPDATE ... RETURNING`` first. That write locks the
channel's row (PostgreSQL) or the database (SQLite) until the entry is in, so two
concurrent writes to one channel get consecutive ids and never the same one, and the
rate limit compares against the entry that really came before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine, RowMapping

from imprint.channels.entries import ChannelRateLimited, Entry, EntryDraft
from imprint.clock import Clock, SystemClock
from imprint.errors import NotFound
from imprint.provisioning.channels import FIELD_NAMES
from imprint.store.db import reading, writing
from imprint.store.tables import channel_entries, channels

__all__ = ["SqlEntryStore"]


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
        bump = (
            update(channels)
            .where(channels.c.id == channel_id)
            .values(last_entry_id=channels.c.last_entry_id + 1)
            .returning(channels.c.last_entry_id)
        )
        unbump = (
            update(channels)
            .where(channels.c.id == channel_id)
            .values(last_entry_id=channels.c.last_entry_id - 1)
        )
        with writing(self._engine) as conn:
            bumped = conn.execute(bump).first()
            if bumped is None:
                raise NotFound(f"no channel {channel_id}")
            entry_id = int(bumped[0])
            at = self._clock.now()  # taken under the lock: entries are in time order
            if min_interval > timedelta(0) and entry_id > 1:
                previous = conn.execute(
                    select(channel_entries.c.created_at).where(
                        channel_entries.c.channel_id == channel_id,
                        channel_entries.c.entry_id == entry_id - 1,
                    )
                ).scalar_one_or_none()
                if previous is not None and at - previous < min_interval:
                    wait = (min_interval - (at - previous)).total_seconds()
                    # Undone by hand: in a unit of work the transaction goes on.
                    conn.execute(unbump)
                    raise ChannelRateLimited(
                        f"channel {channel_id} takes one entry per "
                        f"{min_interval.total_seconds():g} s",
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
            conn.execute(insert(channel_entries).values(**values))
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

    def latest(self, channel_id: int, results: int) -> Sequence[Entry]:
        query = (
            select(channel_entries)
            .where(channel_entries.c.channel_id == channel_id)
            .order_by(channel_entries.c.entry_id.desc())
            .limit(results)
        )
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
