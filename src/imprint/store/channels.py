"""Channels on SQL: keys sealed with the KEK and found by SHA-256."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.provisioning.channels import (
    FIELD_NAMES,
    Channel,
    ChannelDraft,
    ChannelKey,
    KeyKind,
    key_sha256,
)
from imprint.sealing import SecretBox
from imprint.store.db import Prepared, guarded, reading, writing
from imprint.store.tables import channel_keys, channels

__all__ = ["SqlChannelStore"]


def _context(key_id: str) -> str:
    return f"channel-key:{key_id}"


_held = channel_keys.alias("held")
_key = channel_keys.alias("key")
_KEY_COLUMNS = (
    _key.c.id.label("key_id"),
    _key.c.kind.label("key_kind"),
    _key.c.key_sealed.label("key_sealed"),
    _key.c.created_at.label("key_created_at"),
)
#: The channel holding the key whose lookup hash is given, with every key of it, one row
#: a key: what ThingSpeak's ``/update`` and feed reads look up, in one statement.
_BY_KEY = Prepared(
    select(channels, _held.c.kind.label("held_kind"), *_KEY_COLUMNS)
    .select_from(
        _held.join(channels, channels.c.id == _held.c.channel_id).join(
            _key, _key.c.channel_id == channels.c.id
        )
    )
    .where(_held.c.lookup_sha256 == bindparam("lookup"))
    .order_by(_key.c.created_at, _key.c.id)
)


def _with_its_keys(where: ColumnElement[bool]) -> Prepared:
    """The channel ``where`` names with its keys, one row a key (one row without any)."""
    return Prepared(
        select(channels, *_KEY_COLUMNS)
        .select_from(channels.outerjoin(_key, _key.c.channel_id == channels.c.id))
        .where(where)
        .order_by(_key.c.created_at, _key.c.id)
    )


_BY_ID = _with_its_keys(channels.c.id == bindparam("channel"))
#: A device's channel (a device registering asks for it).
_FOR_DEVICE = _with_its_keys(channels.c.device_ref == bindparam("device_ref"))
_INSERT = Prepared(insert(channels).returning(channels.c.id))
_INSERT_KEYS = Prepared(insert(channel_keys))


class SqlChannelStore:
    """Implements :class:`imprint.provisioning.channels.ChannelStore`."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    def _key_row(self, channel_id: int, key: ChannelKey) -> dict[str, Any]:
        return {
            "id": key.id,
            "channel_id": channel_id,
            "kind": key.kind.value,
            "lookup_sha256": key_sha256(key.key),
            "key_sealed": self._box.seal(key.key.encode("ascii"), _context(key.id)),
            "created_at": key.created_at,
        }

    @staticmethod
    def _channel_row(row: Mapping[Any, Any], keys: tuple[ChannelKey, ...] = ()) -> Channel:
        return Channel(
            id=row["id"],
            owner=row["owner"],
            device_ref=row["device_ref"],
            device_id=row["device_id"],
            enrollment_id=row["enrollment_id"],
            name=row["name"],
            fields={name: row[name] for name in FIELD_NAMES if row[name] is not None},
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            keys=keys,
        )

    def _with_keys(self, rows: Sequence[Mapping[str, Any]]) -> Channel:
        """The channel of ``rows`` (:data:`_BY_KEY`, :func:`_with_its_keys`), its keys opened."""
        keys = tuple(
            ChannelKey(
                id=row["key_id"],
                kind=KeyKind(row["key_kind"]),
                key=self._box.open(row["key_sealed"], _context(row["key_id"])).decode("ascii"),
                created_at=row["key_created_at"],
            )
            for row in rows
            if row["key_id"] is not None
        )
        return self._channel_row(rows[0], keys)

    def get(self, channel_id: int) -> Channel:
        with reading(self._engine) as conn:
            rows = _BY_ID.rows(conn, {"channel": channel_id})
        if not rows:
            raise NotFound(f"no channel {channel_id}")
        return self._with_keys(rows)

    def for_device(self, device_ref: str) -> Channel | None:
        with reading(self._engine) as conn:
            rows = _FOR_DEVICE.rows(conn, {"device_ref": device_ref})
        return self._with_keys(rows) if rows else None

    def search(
        self, *, owners: Collection[str] | None, limit: int, after: int | None = None
    ) -> Sequence[Channel]:
        """Channels in id order, of ``owners`` (None: all), without their keys."""
        query = select(channels).order_by(channels.c.id).limit(limit)
        if owners is not None:
            query = query.where(channels.c.owner.in_(sorted(owners)))
        if after is not None:
            query = query.where(channels.c.id > after)
        with reading(self._engine) as conn:
            rows = list(conn.execute(query).mappings())
        return [self._channel_row(row) for row in rows]

    def find_by_key(self, lookup_sha256: str) -> tuple[Channel, KeyKind] | None:
        with reading(self._engine) as conn:
            rows = _BY_KEY.rows(conn, {"lookup": lookup_sha256})
        if not rows:
            return None
        return self._with_keys(rows), KeyKind(rows[0]["held_kind"])

    def create(self, draft: ChannelDraft, keys: Sequence[ChannelKey]) -> Channel:
        values: dict[str, Any] = {
            "owner": draft.owner,
            "device_ref": draft.device_ref,
            "device_id": draft.device_id,
            "enrollment_id": draft.enrollment_id,
            "name": draft.name,
            "created_at": draft.created_at,
            "updated_at": draft.created_at,
            **{name: draft.fields.get(name) for name in FIELD_NAMES},
        }
        try:
            with writing(self._engine) as conn, guarded(conn):
                channel_id = int(_INSERT.rows(conn, values)[0]["id"])
                if keys:
                    _INSERT_KEYS.execute(conn, [self._key_row(channel_id, key) for key in keys])
        except IntegrityError:
            raise Conflict(
                f"device {draft.device_id!r} has a channel already", code="channel_exists"
            ) from None
        # As :meth:`get` would read it back: the fields in use, the keys in their order.
        return self._channel_row(
            {"id": channel_id, **values},
            tuple(sorted(keys, key=lambda key: (key.created_at, key.id))),
        )

    def replace_key(
        self, channel_id: int, old_key_id: str | None, new: ChannelKey, at: datetime
    ) -> None:
        # Guarded: a NotFound after the first write leaves nothing behind in a unit of work
        # on PostgreSQL (on SQLite at most ``updated_at`` moved).
        with writing(self._engine) as conn, guarded(conn):
            touched = conn.execute(
                update(channels).where(channels.c.id == channel_id).values(updated_at=at)
            ).rowcount
            if touched == 0:
                raise NotFound(f"no channel {channel_id}")
            if old_key_id is not None:
                removed = conn.execute(
                    delete(channel_keys).where(
                        channel_keys.c.id == old_key_id, channel_keys.c.channel_id == channel_id
                    )
                ).rowcount
                if removed == 0:
                    raise NotFound(f"channel {channel_id} has no key {old_key_id!r}")
            conn.execute(insert(channel_keys).values(**self._key_row(channel_id, new)))
