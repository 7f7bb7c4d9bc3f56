"""Entries: one write to a channel, numbered 1, 2, 3, ... per channel.

Two wire formats arrive here. ThingSpeak's ``/update`` names fields ``field1`` ..
``field8`` and adds ``lat``, ``long``, ``elevation`` and ``status``; the connector's
``/api:v1/stack/alias`` names them by their labels (``temperature=50``). Both become an
:class:`EntryDraft`, which the store appends with the next entry id of the channel.
Values are text, as ThingSpeak keeps them; nothing here echoes a rejected value back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from imprint.attestation.base import TooManyAttempts
from imprint.errors import AuthenticationRequired, InvalidValue
from imprint.provisioning.channels import FIELD_NAMES

__all__ = [
    "MAX_RESULTS",
    "MAX_VALUE_LENGTH",
    "ChannelKeyInvalid",
    "ChannelRateLimited",
    "EmptyUpdate",
    "Entry",
    "EntryDraft",
    "EntryStore",
    "UnknownChannelField",
    "connector_draft",
    "thingspeak_draft",
]

MAX_RESULTS = 8000  # ThingSpeak's ceiling for one feed read
MAX_VALUE_LENGTH = 255
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")


class ChannelKeyInvalid(AuthenticationRequired):
    """The key (or certificate) does not open this channel for what was asked."""

    code = "channel_key_invalid"


class ChannelRateLimited(TooManyAttempts):
    """The channel was written to less than the configured interval ago."""

    code = "channel_rate_limited"


class UnknownChannelField(InvalidValue):
    code = "channel_field_unknown"


class EmptyUpdate(InvalidValue):
    code = "channel_update_empty"


class UnknownParameter(InvalidValue):
    code = "parameter_unknown"


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """What one write carries, before the store numbers it."""

    fields: Mapping[str, str] = field(default_factory=dict)  # field1 .. field8 -> value
    latitude: str | None = None
    longitude: str | None = None
    elevation: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    channel_id: int
    entry_id: int
    created_at: datetime
    fields: Mapping[str, str]
    latitude: str | None = None
    longitude: str | None = None
    elevation: str | None = None
    status: str | None = None


class EntryStore(Protocol):
    def append(self, channel_id: int, draft: EntryDraft, *, min_interval: timedelta) -> Entry:
        """Store ``draft`` as the channel's next entry, numbered and stamped atomically
        (ids and times rise together).

        Raises:
            NotFound: no such channel.
            ChannelRateLimited: its last entry is younger than ``min_interval``.
        """

    def latest(
        self,
        channel_id: int,
        results: int,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Sequence[Entry]:
        """The newest ``results`` entries (written at ``start`` or later, and at ``end``
        or earlier, when given), oldest first."""

    def last_entry_id(self, channel_id: int) -> int:
        """The id of the newest entry (0 for none)."""


def _text(name: str, value: str) -> str:
    if len(value) > MAX_VALUE_LENGTH or not _TEXT.fullmatch(value):
        raise InvalidValue(f"{name}: at most {MAX_VALUE_LENGTH} characters, no control characters")
    return value


def _number(name: str, value: str, bound: float | None) -> str:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or len(value) > 32 or (bound is not None and abs(number) > bound):
        limits = f" between -{bound:g} and {bound:g}" if bound is not None else ""
        raise InvalidValue(f"{name}: a decimal number{limits}")
    return value.strip()


def _field_unknown(name: str, known: Sequence[str]) -> UnknownChannelField:
    listed = ", ".join(known)
    return UnknownChannelField(f"{name[:40]!r} is not a field of this channel (it has {listed})")


def _finish(draft: EntryDraft) -> EntryDraft:
    if not (draft.fields or draft.status or draft.latitude or draft.longitude or draft.elevation):
        raise EmptyUpdate("nothing to write: give at least one field")
    return draft


def thingspeak_draft(fields: Mapping[str, str], params: Mapping[str, str]) -> EntryDraft:
    """An entry from ThingSpeak's update parameters (``api_key`` already taken out) for
    a channel with ``fields`` (``field1`` .. ``field8`` -> label).

    Raises:
        UnknownChannelField: a ``fieldN`` the channel does not have.
        UnknownParameter: a parameter ThingSpeak's update does not know, or that
            imprint does not take (``created_at``: imprint stamps entries itself).
        InvalidValue: a value that is too long or not a number where one is needed.
        EmptyUpdate: no value at all.
    """
    values: dict[str, str] = {}
    extra: dict[str, str | None] = {}
    for name, value in params.items():
        if name in FIELD_NAMES:
            if name not in fields:
                raise _field_unknown(name, sorted(fields))
            values[name] = _text(name, value)
        elif name == "lat":
            extra["latitude"] = _number(name, value, 90)
        elif name == "long":
            extra["longitude"] = _number(name, value, 180)
        elif name == "elevation":
            extra["elevation"] = _number(name, value, None)
        elif name == "status":
            extra["status"] = _text(name, value)
        else:
            raise UnknownParameter(
                f"{name[:40]!r}: update takes api_key, field1 .. field8, lat, long, "
                "elevation and status"
            )
    return _finish(EntryDraft(fields=values, **extra))


def connector_draft(fields: Mapping[str, str], form: Mapping[str, str]) -> EntryDraft:
    """An entry from the connector's form (``temperature=50``) for a channel with
    ``fields``: each name is a field's label (compared without case) or a ``fieldN``
    name of the channel.

    Raises:
        UnknownChannelField: a name that is neither.
        InvalidValue: a value that is too long or has control characters.
        EmptyUpdate: no value at all.
    """
    by_label = {label.casefold(): name for name, label in fields.items()}
    values: dict[str, str] = {}
    for name, value in form.items():
        target = name if name in fields else by_label.get(name.casefold())
        if target is None:
            raise _field_unknown(name, [fields[n] for n in sorted(fields)])
        values[target] = _text(name, value)
    return _finish(EntryDraft(fields=values))
