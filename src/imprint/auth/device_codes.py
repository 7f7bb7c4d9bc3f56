"""The OAuth 2.0 Device Authorization Grant (RFC 8628): a device code for the client that
polls, a short user code for the person who approves it on another screen.

Both are stored only as SHA-256 digests. A user code is eight letters of an alphabet
without vowels or look-alikes (RFC 8628 section 6.1: about 34 bits), shown as
``BCDF-GHJK``; what a person types is normalized (case, dashes and spaces ignored). A
device code is 256 random bits. Each record is short-lived and answers one token
request with a token: the store marks it used in the same transaction that finds it
approved, so any node of a cluster answers and none answers twice.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

__all__ = [
    "DeviceAuthorization",
    "DeviceCodeStore",
    "DeviceState",
    "PollAnswer",
    "device_code_digest",
    "new_device_authorization",
    "normalize_user_code",
    "user_code_digest",
]

#: RFC 8628 section 3.5: a client told to slow down waits this much longer.
SLOW_DOWN_STEP = 5
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_LENGTH = 8


class DeviceState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    USED = "used"


class PollAnswer(StrEnum):
    """What a token request with a device code gets (RFC 8628 section 3.5)."""

    PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    EXPIRED = "expired_token"
    DENIED = "access_denied"
    UNKNOWN = "invalid_grant"  # unknown, another client's, or used already
    APPROVED = "approved"


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    device_code_sha256: str
    user_code_sha256: str
    client_id: str
    scope: str
    state: DeviceState
    interval_seconds: int
    created_at: datetime
    expires_at: datetime
    user_id: str | None = None
    org_id: str | None = None
    last_polled_at: datetime | None = None
    decided_at: datetime | None = None


class DeviceCodeStore(Protocol):
    def add(self, record: DeviceAuthorization) -> None: ...

    def pending(self, user_code_sha256: str, at: datetime) -> DeviceAuthorization | None:
        """The pending, unexpired request of this user code, else None."""

    def decide(
        self,
        user_code_sha256: str,
        *,
        approve: bool,
        user_id: str,
        org_id: str | None,
        at: datetime,
    ) -> DeviceAuthorization | None:
        """Approve or deny a pending, unexpired request; None when there is none."""

    def poll(
        self, device_code_sha256: str, client_id: str, at: datetime
    ) -> tuple[PollAnswer, DeviceAuthorization | None]:
        """Answer one token request; an approved record is marked used as it is returned."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def normalize_user_code(typed: str) -> str:
    """What a person typed, as stored: upper case, without dashes or spaces."""
    return "".join(c for c in typed.upper() if c not in "- \t")[:64]


def user_code_digest(typed: str) -> str:
    return _digest(normalize_user_code(typed))


def device_code_digest(code: str) -> str:
    return _digest(code)


def new_device_authorization(
    *, client_id: str, scope: str, at: datetime, lifetime: timedelta, interval: int
) -> tuple[str, str, DeviceAuthorization]:
    """(device code, user code as shown, record to store)."""
    device_code = secrets.token_urlsafe(32)
    letters = "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
    user_code = f"{letters[:4]}-{letters[4:]}"
    record = DeviceAuthorization(
        device_code_sha256=device_code_digest(device_code),
        user_code_sha256=user_code_digest(user_code),
        client_id=client_id,
        scope=scope,
        state=DeviceState.PENDING,
        interval_seconds=interval,
        created_at=at,
        expires_at=at + lifetime,
    )
    return device_code, user_code, record
