"""Registration keys: one shared key per enrollment, typed into devices by their owner.

A key such as ``HQ481047-1JWORF43`` has two halves of equal length (at least 8 of
``A-Z 0-9``). The device proves itself with the *first* half; the *second* half never
crosses the network: it is the secret the server seals the bundle's secrets with and
authenticates its answer with, so only a device that was given the whole key can use
the answer.

Keys rotate with a transition: the old key becomes *previous* and keeps working until
its ``expires_at``, so devices configured with either key provision during the change;
a later rotation drops the previous key for good. The server stores the key sealed
(it needs the second half back) and finds it by SHA-256 of the first half.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from imprint.errors import Conflict, InvalidValue, NotFound
from imprint.provisioning.enrollments import EnrollmentStore, Mechanism

__all__ = [
    "DEFAULT_HALF_LENGTH",
    "DEFAULT_TRANSITION",
    "MAX_TRANSITION",
    "KeyState",
    "RegistrationKey",
    "RegistrationKeyStore",
    "Rotation",
    "create_registration_key",
    "generate_registration_key",
    "lookup_sha256",
    "parse_registration_key",
    "rotate_registration_key",
    "valid_half",
]

DEFAULT_HALF_LENGTH = 8
MAX_HALF_LENGTH = 32
DEFAULT_TRANSITION = timedelta(days=7)
MAX_TRANSITION = timedelta(days=90)
_ALPHABET = string.ascii_uppercase + string.digits
_HALF = re.compile(rf"[A-Z0-9]{{{DEFAULT_HALF_LENGTH},{MAX_HALF_LENGTH}}}")


class KeyState(StrEnum):
    CURRENT = "current"
    PREVIOUS = "previous"


@dataclass(frozen=True, slots=True)
class RegistrationKey:
    """One key of an enrollment; ``key`` is the whole secret and never printed by repr."""

    id: str
    enrollment_id: str
    key: str = field(repr=False)
    state: KeyState
    created_at: datetime
    expires_at: datetime | None = None

    @property
    def first_half(self) -> str:
        return self.key.partition("-")[0]

    @property
    def second_half(self) -> str:
        return self.key.partition("-")[2]

    def is_active(self, at: datetime) -> bool:
        """The current key, or the previous one inside its transition window."""
        return self.expires_at is None or at < self.expires_at


@dataclass(frozen=True, slots=True)
class Rotation:
    """The key just made, and the one it replaced (still valid until its expires_at)."""

    current: RegistrationKey
    previous: RegistrationKey | None


class RegistrationKeyStore(Protocol):
    def find(self, lookup_sha256: str) -> RegistrationKey | None:
        """The key whose first half hashes to ``lookup_sha256``, if any."""

    def for_enrollment(self, enrollment_id: str) -> Sequence[RegistrationKey]:
        """The enrollment's keys, current first."""

    def install(
        self, key: RegistrationKey, *, replacing: str | None, previous_expires_at: datetime
    ) -> None:
        """Make ``key`` current in one transaction.

        The current key ``replacing`` (None when there is none) becomes previous until
        ``previous_expires_at``; any older previous key is deleted.

        Raises:
            Conflict: the current key is no longer ``replacing`` (a concurrent change),
                or the first half is already in use.
        """

    def set_expiry(self, key_id: str, expires_at: datetime) -> None:
        """End (or extend) a previous key's transition window.

        Raises:
            NotFound: no previous key with this id.
        """


def valid_half(text: str) -> bool:
    """True for 8 to 32 of ``A-Z 0-9``: the shape of either half."""
    return _HALF.fullmatch(text) is not None


def lookup_sha256(first_half: str) -> str:
    """What the store finds a key by: hex SHA-256 of its first half."""
    return hashlib.sha256(first_half.encode("ascii")).hexdigest()


def generate_registration_key(half_length: int = DEFAULT_HALF_LENGTH) -> str:
    """A new key ``XXXXXXXX-XXXXXXXX``: two halves of ``half_length`` random ``A-Z 0-9``.

    Raises:
        InvalidValue: ``half_length`` outside 8..32.
    """
    if not DEFAULT_HALF_LENGTH <= half_length <= MAX_HALF_LENGTH:
        raise InvalidValue(f"half_length: {DEFAULT_HALF_LENGTH} to {MAX_HALF_LENGTH}")
    halves = ("".join(secrets.choice(_ALPHABET) for _ in range(half_length)) for _ in "ab")
    return "-".join(halves)


def parse_registration_key(text: str) -> tuple[str, str]:
    """Split and check a key given by an administrator (e.g. one from midPoint).

    Raises:
        InvalidValue: not two equally long halves of 8 to 32 ``A-Z 0-9`` joined by ``-``.
    """
    first, sep, second = text.partition("-")
    if not sep or not valid_half(first) or not valid_half(second) or len(first) != len(second):
        raise InvalidValue(
            "key: two halves of equal length, each 8 to 32 of A-Z 0-9, joined by '-'"
        )
    return first, second


def _enrollment_check(enrollments: EnrollmentStore, enrollment_id: str) -> None:
    enrollment = enrollments.get(enrollment_id)
    if enrollment.mechanism is not Mechanism.REGISTRATION_KEY:
        raise Conflict(
            f"enrollment {enrollment_id!r} uses {enrollment.mechanism.value}, not registration-key",
            code="wrong_mechanism",
        )


def _current(store: RegistrationKeyStore, enrollment_id: str) -> RegistrationKey | None:
    return next(
        (k for k in store.for_enrollment(enrollment_id) if k.state is KeyState.CURRENT), None
    )


def _new_key(key: str | None, half_length: int) -> str:
    text = generate_registration_key(half_length) if key is None else key
    parse_registration_key(text)
    return text


def rotate_registration_key(
    store: RegistrationKeyStore,
    enrollments: EnrollmentStore,
    enrollment_id: str,
    *,
    at: datetime,
    transition: timedelta = DEFAULT_TRANSITION,
    key: str | None = None,
    half_length: int = DEFAULT_HALF_LENGTH,
    require_current: bool | None = None,
) -> Rotation:
    """Give the enrollment a new current key; the old one works for ``transition`` more.

    Args:
        store: where keys live.
        enrollments: to check the enrollment exists and uses registration-key.
        enrollment_id: the enrollment.
        at: now.
        transition: how long the replaced key keeps working (``0`` = not at all).
        key: an existing key to install (e.g. moved from midPoint); default generated.
        half_length: length of each half of a generated key.
        require_current: True refuses when there is no key yet, False when there is
            one (``None`` accepts both: create or rotate).

    Raises:
        NotFound: no such enrollment.
        Conflict: the enrollment is not registration-key, or ``require_current`` fails,
            or the first half is in use already.
        InvalidValue: a bad key, half length or transition.
    """
    if not timedelta(0) <= transition <= MAX_TRANSITION:
        raise InvalidValue("transition: from 0s up to 90d")
    _enrollment_check(enrollments, enrollment_id)
    current = _current(store, enrollment_id)
    if require_current is True and current is None:
        raise NotFound(f"enrollment {enrollment_id!r} has no registration key yet")
    if require_current is False and current is not None:
        raise Conflict(
            f"enrollment {enrollment_id!r} has a registration key already; rotate it",
            code="registration_key_exists",
        )
    made = RegistrationKey(
        id=str(uuid.uuid4()),
        enrollment_id=enrollment_id,
        key=_new_key(key, half_length),
        state=KeyState.CURRENT,
        created_at=at,
    )
    expires = at + transition
    store.install(made, replacing=current.id if current else None, previous_expires_at=expires)
    previous = None
    if current is not None:
        previous = RegistrationKey(
            id=current.id,
            enrollment_id=enrollment_id,
            key=current.key,
            state=KeyState.PREVIOUS,
            created_at=current.created_at,
            expires_at=expires,
        )
    return Rotation(made, previous)


def create_registration_key(
    store: RegistrationKeyStore,
    enrollments: EnrollmentStore,
    enrollment_id: str,
    *,
    at: datetime,
    key: str | None = None,
    half_length: int = DEFAULT_HALF_LENGTH,
) -> RegistrationKey:
    """The enrollment's first key.

    Raises:
        Conflict: it has one already (rotate it instead), or not registration-key.
        NotFound: no such enrollment.
        InvalidValue: a bad key or half length.
    """
    return rotate_registration_key(
        store,
        enrollments,
        enrollment_id,
        at=at,
        key=key,
        half_length=half_length,
        require_current=False,
    ).current
