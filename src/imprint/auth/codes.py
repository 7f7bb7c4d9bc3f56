"""Authorization codes (RFC 6749 4.1) bound to a PKCE challenge (RFC 7636, S256 only).

A code is 256 random bits, stored only as its SHA-256, valid for a short time and
exchanged at most once: the store marks it used in the same statement that finds it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

__all__ = [
    "AuthorizationCode",
    "AuthorizationCodeStore",
    "new_authorization_code",
    "pkce_challenge",
    "valid_challenge",
    "verifier_matches",
]

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    code_sha256: str
    client_id: str
    user_id: str
    org_id: str | None
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    expires_at: datetime
    created_at: datetime
    used_at: datetime | None = None


class AuthorizationCodeStore(Protocol):
    def add(self, code: AuthorizationCode) -> None: ...

    def consume(self, code_sha256: str, at: datetime) -> AuthorizationCode | None:
        """Mark the code used and return it; None when unknown or used before."""


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("ascii", "replace")).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str) -> bool:
    return _CHALLENGE.fullmatch(challenge) is not None


def verifier_matches(verifier: str, challenge: str) -> bool:
    """True when ``verifier`` is well-formed and hashes to ``challenge``."""
    if not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


def new_authorization_code(
    *,
    client_id: str,
    user_id: str,
    org_id: str | None,
    redirect_uri: str,
    scope: str,
    nonce: str | None,
    code_challenge: str,
    at: datetime,
    lifetime: timedelta,
) -> tuple[str, AuthorizationCode]:
    """A new code (to send) and its record (to store)."""
    code = secrets.token_urlsafe(32)
    record = AuthorizationCode(
        code_sha256=code_digest(code),
        client_id=client_id,
        user_id=user_id,
        org_id=org_id,
        redirect_uri=redirect_uri,
        scope=scope,
        nonce=nonce,
        code_challenge=code_challenge,
        expires_at=at + lifetime,
        created_at=at,
    )
    return code, record
