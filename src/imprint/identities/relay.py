"""The browser relay: a client's CSR reaches the CA through a signed-in user's browser.

A client application that cannot reach imprint's API with a user token posts its CSR
and gets a random *state*. The user opens the approval page for that state in a browser
where she can sign in, compares the key fingerprint with the one the client shows, and
approves: the identity certificate is signed for her owner. The client collects the
chain with the state. The private key never leaves the client; the state is 192 random
bits, stored only as its SHA-256, expires after a minute (configurable) and works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.errors import Conflict, NotFound
from imprint.identities.identity import spki_sha256

__all__ = [
    "MAX_STATE_LENGTH",
    "RelayDecided",
    "RelayExpired",
    "RelayRequest",
    "RelayStatus",
    "RelayStore",
    "RelayUnknown",
    "csrf_token",
    "new_relay",
    "state_digest",
]

_STATE_BYTES = 24
MAX_STATE_LENGTH = 64


class RelayUnknown(NotFound):
    code = "relay_unknown"


class RelayExpired(NotFound):
    """The state's minute is over (the routes answer 410 Gone)."""

    code = "relay_expired"


class RelayDecided(Conflict):
    code = "relay_decided"


class RelayStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class RelayRequest:
    state_sha256: str
    csr_pem: str
    subject: str
    spki_sha256: str
    status: RelayStatus
    created_at: datetime
    expires_at: datetime
    owner: str | None = None
    serial: str | None = None
    decided_by: str | None = None
    source: str | None = None

    def expired(self, at: datetime) -> bool:
        return at >= self.expires_at

    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(self.csr_pem.encode("ascii"))

    @property
    def fingerprint(self) -> str:
        """The key fingerprint as people compare it: colon-separated hex pairs."""
        digest = self.spki_sha256.upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class RelayStore(Protocol):
    def add(self, request: RelayRequest) -> None: ...

    def get(self, state_sha256: str) -> RelayRequest | None: ...

    def decide(
        self,
        state_sha256: str,
        status: RelayStatus,
        *,
        owner: str | None,
        serial: str | None,
        decided_by: str,
        at: datetime,
    ) -> bool:
        """Move a pending, unexpired request to ``status``; False when it was not."""

    def take(self, state_sha256: str) -> RelayRequest | None:
        """Remove a decided request and return it (None: not decided, or taken)."""

    def purge(self, before: datetime) -> int:
        """Delete requests that expired before ``before``."""


def state_digest(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def new_relay(
    csr: x509.CertificateSigningRequest, *, at: datetime, lifetime: timedelta, source: str | None
) -> tuple[str, RelayRequest]:
    """A fresh state and the request to store under its digest."""
    state = secrets.token_urlsafe(_STATE_BYTES)
    request = RelayRequest(
        state_sha256=state_digest(state),
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        subject=csr.subject.rfc4514_string()[:500],
        spki_sha256=spki_sha256(csr.public_key()),
        status=RelayStatus.PENDING,
        created_at=at,
        expires_at=_whole_second_after(at + lifetime),
        source=source,
    )
    return state, request


def _whole_second_after(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second: a state lives at least its lifetime."""
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def csrf_token(cookie: str, state: str) -> str:
    """The form token for ``state`` bound to the browser's CSRF cookie.

    A page on another origin can neither read nor set the cookie (``__Host-``,
    ``SameSite=Strict``), so it cannot produce a token that matches it.
    """
    return hmac.new(cookie.encode("ascii"), f"relay:{state}".encode(), hashlib.sha256).hexdigest()
