"""One-time passwords: what an administrator hands a device for EST's HTTP Basic.

A one-time password admits one device id of one ``oob-secret`` enrollment, once, until
it expires. The server makes it (128 random bits) and shows it once; only its SHA-256
is stored, which is enough for a secret of that strength (as for API keys, decision
0005). It is spent when a certificate went out for it; a retry with the same key by
the device it provisioned gets that certificate again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

__all__ = [
    "MAX_VALIDITY",
    "OneTimePassword",
    "OneTimePasswordStore",
    "new_one_time_password",
    "password_sha256",
]

MAX_VALIDITY = timedelta(days=30)


def password_sha256(password: str) -> str:
    """The stored form of a password."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class OneTimePassword:
    id: str
    enrollment_id: str
    device_id: str
    password_sha256: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None = None

    def expired(self, at: datetime) -> bool:
        return at >= self.expires_at


def new_one_time_password(
    enrollment_id: str, device_id: str, *, at: datetime, valid_for: timedelta, created_by: str
) -> tuple[str, OneTimePassword]:
    """A fresh password (shown once) and its record."""
    password = secrets.token_urlsafe(16)
    record = OneTimePassword(
        id=str(uuid.uuid4()),
        enrollment_id=enrollment_id,
        device_id=device_id,
        password_sha256=password_sha256(password),
        created_at=at,
        expires_at=at + valid_for,
        created_by=created_by[:200],
    )
    return password, record


class OneTimePasswordStore(Protocol):
    def add(self, password: OneTimePassword) -> None: ...

    def find(
        self, digest: str, device_id: str, enrollment_ids: Collection[str] | None = None
    ) -> OneTimePassword | None:
        """The password with that SHA-256, if it admits ``device_id`` (in one of those)."""
        ...

    def mark_used(self, password_id: str, at: datetime) -> bool:
        """Spend it; False when it was spent already."""
        ...
