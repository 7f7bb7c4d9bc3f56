"""Pre-shared keys of client applications (PSK mode of the plgd d2d client).

A PSK is a subject (the identity the client presents, typically a UUID) and a 16-byte
key, held per organization. imprint generates the key, or the client registers one it
made itself. The key is sealed at rest and shown once, in the answer that creates it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from imprint.errors import Conflict, InvalidValue

__all__ = [
    "KEY_BYTES",
    "ClientPsk",
    "PskOrigin",
    "PskStore",
    "PskSubjectTaken",
    "check_subject",
    "new_psk",
    "parse_key",
]

KEY_BYTES = 16
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")
_HEX = re.compile(r"[0-9a-fA-F]{32}")


class PskSubjectTaken(Conflict):
    code = "psk_subject_taken"


class PskOrigin(StrEnum):
    ISSUED = "issued"
    REGISTERED = "registered"


@dataclass(frozen=True, slots=True)
class ClientPsk:
    id: str
    org_id: str
    subject: str
    origin: PskOrigin
    created_by: str
    created_at: datetime
    key: bytes = field(repr=False, default=b"")


class PskStore(Protocol):
    def add(self, psk: ClientPsk) -> None:
        """Store a PSK, its key sealed.

        Raises:
            PskSubjectTaken: the organization has a PSK with this subject.
        """

    def get(self, psk_id: str) -> ClientPsk:
        """Without the key. Raises NotFound."""

    def with_key(self, psk_id: str) -> ClientPsk:
        """With the opened key. Raises NotFound."""

    def search(self, org_ids: set[str] | None, limit: int) -> Sequence[ClientPsk]:
        """Without keys; ``None``: every organization."""

    def remove(self, psk_id: str) -> None: ...


def parse_key(text: str) -> bytes:
    """A 16-byte key given as 32 hex digits, as base64 (24 characters, or 22 unpadded),
    or as plgd writes it: a string of 16 printable ASCII characters, whose bytes are the
    key (``"0123456789012345"``). No string can be read two ways: the three forms
    differ in length.

    Raises:
        InvalidValue: anything else.
    """
    if len(text) == KEY_BYTES and text.isascii() and text.isprintable():
        return text.encode("ascii")
    text = text.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    if len(text) <= 24:
        padded = text + "=" * (-len(text) % 4)
        for altchars in (None, b"-_"):
            try:
                key = base64.b64decode(padded, altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(key) == KEY_BYTES:
                return key
    raise InvalidValue(
        "key: 16 bytes as 32 hex digits, as base64, or as a 16-character string (plgd)"
    )


def check_subject(subject: str) -> str:
    """Raises InvalidValue unless 1..100 letters, digits and ``._:@-``."""
    if not _SUBJECT.fullmatch(subject):
        raise InvalidValue("subject: 1 to 100 letters, digits and . _ : @ - (e.g. a UUID)")
    return subject


def new_psk(
    org_id: str, *, subject: str | None, key: bytes | None, created_by: str, at: datetime
) -> ClientPsk:
    """A PSK to store: the given key (registered) or 16 random bytes (issued)."""
    return ClientPsk(
        id=str(uuid.uuid4()),
        org_id=org_id,
        subject=check_subject(subject) if subject is not None else str(uuid.uuid4()),
        origin=PskOrigin.ISSUED if key is None else PskOrigin.REGISTERED,
        created_by=created_by,
        created_at=at,
        key=os.urandom(KEY_BYTES) if key is None else key,
    )
