"""Channels: where a provisioned device sends its measurements (the ThingSpeak model).

An enrollment may ask for one channel per device (:class:`ChannelTemplate`). The
Provisioner makes it the first time the device provisions and hands the device the
channel id and its write key; every later provisioning of that device gets the same
channel back. A channel has up to eight named fields (``field1`` .. ``field8``), one
write key (the device writes with it) and read keys (people and dashboards read with
them).

Keys look like ThingSpeak's: 16 of ``A-Z 0-9`` from a CSPRNG, about 82 bits. The
server keeps them sealed with the key-encryption key, because owners may look at them
again, and finds a channel by the SHA-256 of a key. Channel ids are integers, as
ThingSpeak's are.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from imprint.errors import Conflict, InvalidValue, NotFound

__all__ = [
    "DEVICE_ID_PLACEHOLDER",
    "FIELD_NAMES",
    "KEY_LENGTH",
    "Channel",
    "ChannelDraft",
    "ChannelKey",
    "ChannelStore",
    "ChannelTemplate",
    "KeyDelivery",
    "KeyKind",
    "add_read_key",
    "channel_for_device",
    "find_by_key",
    "generate_channel_key",
    "key_sha256",
    "regenerate_read_key",
    "regenerate_write_key",
    "validate_template",
]

FIELD_NAMES = tuple(f"field{n}" for n in range(1, 9))
KEY_LENGTH = 16
MAX_READ_KEYS = 10
DEVICE_ID_PLACEHOLDER = "{device_id}"
_ALPHABET = string.ascii_uppercase + string.digits
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_KEY = re.compile(rf"[A-Z0-9]{{{KEY_LENGTH}}}")


class KeyDelivery(StrEnum):
    """How the write key reaches a device whose mechanism shares a secret with it."""

    SEALED = "sealed"  # encrypted under the device's secret (registration-key, ...)
    PLAIN = "plain"  # in the clear inside TLS; midPoint-era firmware reads it so


class KeyKind(StrEnum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True, slots=True)
class ChannelTemplate:
    """What an enrollment asks for: a channel per device, with these field labels."""

    fields: Mapping[str, str]
    name: str = DEVICE_ID_PLACEHOLDER
    delivery: KeyDelivery = KeyDelivery.SEALED

    def channel_name(self, device_id: str) -> str:
        """The template's name with ``{device_id}`` filled in (no other formatting)."""
        return self.name.replace(DEVICE_ID_PLACEHOLDER, device_id)[:200]


def validate_template(template: ChannelTemplate) -> None:
    """Check a channel template before its enrollment is stored.

    Raises:
        InvalidValue: naming the offending field.
    """
    if not template.fields:
        raise InvalidValue("channel.fields: name at least one of field1 .. field8")
    for name, label in template.fields.items():
        if name not in FIELD_NAMES:
            raise InvalidValue(f"channel.fields: {name!r} is not one of field1 .. field8")
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise InvalidValue(f"channel.fields.{name}: 1 to 100 characters, no control characters")
    if not _LABEL.fullmatch(template.name):
        raise InvalidValue("channel.name: 1 to 100 characters, no control characters")


@dataclass(frozen=True, slots=True)
class ChannelKey:
    """One key of a channel; ``key`` is the secret and never printed by repr."""

    id: str
    kind: KeyKind
    key: str = field(repr=False)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChannelDraft:
    """A channel before the store has given it its id."""

    owner: str
    device_ref: str
    device_id: str
    enrollment_id: str
    name: str
    fields: Mapping[str, str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    owner: str
    device_ref: str  # the devices row (not the device id, which is unique per owner only)
    device_id: str
    enrollment_id: str
    name: str
    fields: Mapping[str, str]  # field1 .. field8 -> label, only those in use
    created_at: datetime
    updated_at: datetime
    keys: tuple[ChannelKey, ...] = ()

    @property
    def write_key(self) -> ChannelKey:
        return next(k for k in self.keys if k.kind is KeyKind.WRITE)

    @property
    def read_keys(self) -> tuple[ChannelKey, ...]:
        return tuple(k for k in self.keys if k.kind is KeyKind.READ)


class ChannelStore(Protocol):
    def get(self, channel_id: int) -> Channel:
        """The channel with its keys.

        Raises:
            NotFound: no such channel.
        """

    def for_device(self, device_ref: str) -> Channel | None:
        """The channel of a device (by its devices row id), if it has one."""

    def find_by_key(self, lookup_sha256: str) -> tuple[Channel, KeyKind] | None:
        """The channel holding the key that hashes to ``lookup_sha256``, and its kind."""

    def create(self, draft: ChannelDraft, keys: Sequence[ChannelKey]) -> Channel:
        """Store a new channel and its keys in one transaction.

        Raises:
            Conflict: the device has a channel already (code ``channel_exists``).
        """

    def replace_key(
        self, channel_id: int, old_key_id: str | None, new: ChannelKey, at: datetime
    ) -> None:
        """Put ``new`` in place of ``old_key_id`` (None: add it) in one transaction.

        Raises:
            NotFound: no such channel, or ``old_key_id`` is not one of its keys.
        """


#: Random bytes below this map onto the alphabet evenly (each character 7 of them).
_EVEN = 256 - 256 % len(_ALPHABET)


def generate_channel_key() -> str:
    """A new key: 16 random characters of ``A-Z 0-9`` (ThingSpeak's shape).

    Drawn from one read of the system's random source (a registration makes two keys;
    ``secrets.choice`` a character at a time read it 16 times a key, 18 µs against 3).
    """
    key = ""
    while len(key) < KEY_LENGTH:  # about one byte in 64 is dropped
        drawn = secrets.token_bytes(2 * KEY_LENGTH)
        key += "".join(_ALPHABET[b % len(_ALPHABET)] for b in drawn if b < _EVEN)
    return key[:KEY_LENGTH]


def key_sha256(key: str) -> str:
    """What the store finds a channel by: hex SHA-256 of one of its keys."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def _new_key(kind: KeyKind, at: datetime) -> ChannelKey:
    return ChannelKey(id=str(uuid.uuid4()), kind=kind, key=generate_channel_key(), created_at=at)


def channel_for_device(
    store: ChannelStore,
    template: ChannelTemplate,
    *,
    owner: str,
    enrollment_id: str,
    device_ref: str,
    device_id: str,
    at: datetime,
) -> Channel:
    """The device's channel: the one it has, or a new one with a write and a read key.

    Safe to call again and concurrently for the same device: it always ends with the
    device's one channel.
    """
    existing = store.for_device(device_ref)
    if existing is not None:
        return existing
    draft = ChannelDraft(
        owner=owner,
        device_ref=device_ref,
        device_id=device_id,
        enrollment_id=enrollment_id,
        name=template.channel_name(device_id),
        fields=dict(template.fields),
        created_at=at,
    )
    try:
        return store.create(draft, [_new_key(KeyKind.WRITE, at), _new_key(KeyKind.READ, at)])
    except Conflict:
        made = store.for_device(device_ref)  # a concurrent request made it first
        if made is None:
            raise
        return made


def regenerate_write_key(store: ChannelStore, channel_id: int, *, at: datetime) -> Channel:
    """Replace the write key; the old one stops working at once.

    Raises:
        NotFound: no such channel.
    """
    channel = store.get(channel_id)
    store.replace_key(channel_id, channel.write_key.id, _new_key(KeyKind.WRITE, at), at)
    return store.get(channel_id)


def regenerate_read_key(
    store: ChannelStore, channel_id: int, *, at: datetime, key_id: str | None = None
) -> Channel:
    """Replace one read key (default: the oldest); the old one stops working at once.

    Raises:
        NotFound: no such channel, no read key ``key_id`` on it, or no read key at all.
    """
    channel = store.get(channel_id)
    readers = channel.read_keys
    old = next((k for k in readers if key_id is None or k.id == key_id), None)
    if old is None:
        raise NotFound(f"channel {channel_id} has no such read key")
    store.replace_key(channel_id, old.id, _new_key(KeyKind.READ, at), at)
    return store.get(channel_id)


def add_read_key(store: ChannelStore, channel_id: int, *, at: datetime) -> Channel:
    """Give the channel one more read key.

    Raises:
        NotFound: no such channel.
        Conflict: it has the maximum of read keys already.
    """
    channel = store.get(channel_id)
    if len(channel.read_keys) >= MAX_READ_KEYS:
        raise Conflict(
            f"channel {channel_id} has {MAX_READ_KEYS} read keys; regenerate one instead",
            code="too_many_read_keys",
        )
    store.replace_key(channel_id, None, _new_key(KeyKind.READ, at), at)
    return store.get(channel_id)


def find_by_key(store: ChannelStore, key: str, kind: KeyKind) -> Channel | None:
    """The channel ``key`` opens for ``kind`` (a write key writes, a read key reads).

    A malformed key, an unknown key and a key of the other kind all give None.
    """
    if not _KEY.fullmatch(key):
        return None
    found = store.find_by_key(key_sha256(key))
    if found is None or found[1] is not kind:
        return None
    channel = found[0]
    if not any(
        k.kind is kind and hmac.compare_digest(k.key.encode(), key.encode()) for k in channel.keys
    ):
        return None
    return channel
