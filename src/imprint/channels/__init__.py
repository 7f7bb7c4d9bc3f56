"""Channel data: the entries devices write to their channels and people read back.

The channels themselves (fields, write and read keys) are made at provisioning, see
:mod:`imprint.provisioning.channels`. This package is what happens to them afterwards.
"""

from __future__ import annotations

from imprint.channels.entries import (
    MAX_RESULTS,
    ChannelKeyInvalid,
    ChannelRateLimited,
    Entry,
    EntryDraft,
    EntryStore,
    connector_draft,
    thingspeak_draft,
)

__all__ = [
    "MAX_RESULTS",
    "ChannelKeyInvalid",
    "ChannelRateLimited",
    "Entry",
    "EntryDraft",
    "EntryStore",
    "connector_draft",
    "thingspeak_draft",
]
