"""Access tokens: ES256 JWTs signed with keys sealed in the database, and the JWKS.

Claims: ``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``scope``, ``client_id``
(RFC 9068) and the owner claim (name configurable, default ``https://plgd.dev/owner``)
holding the organization id. The signing key's private half is stored sealed with the
key-encryption key (:mod:`imprint.sealing`); ``kid`` is its RFC 7638 thumbprint.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry

from imprint.clock import Clock, SystemClock, unix_seconds
from imprint.errors import AuthenticationRequired
from imprint.locks import Lock
from imprint.sealing import SecretBox

__all__ = ["SigningKeyRecord", "SigningKeyStore", "TokenService"]

ALGORITHM = "ES256"


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    kid: str
    private_key_sealed: bytes
    created_at: datetime
    retired_at: datetime | None = None


class SigningKeyStore(Protocol):
    def add(self, record: SigningKeyRecord) -> None: ...
    def all(self) -> Sequence[SigningKeyRecord]: ...
    def retire(self, kid: str, at: datetime) -> None: ...


def _context(kid: str) -> str:
    return f"signing-key:{kid}"


class TokenService:
    """Issues and verifies imprint's own tokens.

    Args:
        store: where signing keys live.
        box: seals the private keys.
        issuer: the ``iss`` of every token (the server's base URL by default).
        audience: the ``aud`` the admin API accepts.
        owner_claim: the name of the claim that carries the organization id.
        lifetime: how long an access token lives.
        clock: the time tokens are issued and checked at.
    """

    def __init__(
        self,
        store: SigningKeyStore,
        box: SecretBox,
        *,
        issuer: str,
        audience: str,
        owner_claim: str,
        lifetime: timedelta,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._box = box
        self.issuer = issuer
        self.audience = audience
        self.owner_claim = owner_claim
        self.lifetime = lifetime
        self._clock = clock or SystemClock()
        self._lock = Lock()  # held across statements: see imprint.locks
        self._keys: dict[str, tuple[ECKey, SigningKeyRecord]] = {}
        self._loaded_at = 0.0

    def _load(self) -> None:
        keys: dict[str, tuple[ECKey, SigningKeyRecord]] = {}
        for record in self._store.all():
            pem = self._box.open(record.private_key_sealed, _context(record.kid))
            key = ECKey.import_key(pem, parameters={"kid": record.kid, "use": "sig"})
            keys[record.kid] = (key, record)
        self._keys = keys
        self._loaded_at = time.monotonic()

    def _current(self) -> ECKey:
        with self._lock:
            if not self._keys:
                self._load()
            active = [(r.created_at, k) for k, r in self._keys.values() if r.retired_at is None]
            if active:
                return max(active, key=lambda pair: pair[0])[1]
            key = ECKey.generate_key("P-256", private=True)
            kid = key.thumbprint()
            pem = key.as_pem(private=True)
            record = SigningKeyRecord(
                kid=kid,
                private_key_sealed=self._box.seal(pem, _context(kid)),
                created_at=self._clock.now(),
            )
            self._store.add(record)
            self._load()
            return self._keys[kid][0]

    def ensure_key(self) -> str:
        """The kid of the key tokens are signed with now (made on first use)."""
        return str(self._current().kid)

    def rotate(self) -> str:
        """Retire the current key (it keeps verifying for a token lifetime) and make a
        new one; returns the new kid."""
        old = self._current()
        self._store.retire(str(old.kid), self._clock.now())
        with self._lock:
            self._keys = {}
        return self.ensure_key()

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens still in circulation."""
        self._current()
        cutoff = self._clock.now() - self.lifetime
        with self._lock:
            if time.monotonic() - self._loaded_at > 30:
                self._load()
            published = [
                key.as_dict(private=False, alg=ALGORITHM)
                for key, record in self._keys.values()
                if record.retired_at is None or record.retired_at > cutoff
            ]
        return {"keys": published}

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        audience: str | None,
        scope: Sequence[str],
        owner: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, int]:
        """Sign an access token; returns it and its lifetime in seconds."""
        key = self._current()
        now = unix_seconds(self._clock)
        lifetime = int(self.lifetime.total_seconds())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "scope": " ".join(scope),
        }
        if owner is not None:
            claims[self.owner_claim] = owner
        claims.update(extra or {})
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, key), lifetime

    def id_token(
        self, *, subject: str, client_id: str, nonce: str | None, extra: Mapping[str, Any]
    ) -> str:
        """An OpenID Connect ID token for ``client_id``."""
        key = self._current()
        now = unix_seconds(self._clock)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "iat": now,
            "exp": now + int(self.lifetime.total_seconds()),
            **extra,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}, claims, key)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of one of our access tokens meant for the admin API.

        Raises:
            AuthenticationRequired: bad signature, unknown key, wrong issuer or
                audience, expired, or not a JWT at all.
        """
        with self._lock:
            if not self._keys or time.monotonic() - self._loaded_at > 30:
                self._load()
            keys = KeySet([key for key, _ in self._keys.values()])
        try:
            decoded = jwt.decode(token, keys, algorithms=[ALGORITHM])
            JWTClaimsRegistry(
                now=lambda: unix_seconds(self._clock),
                leeway=30,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            raise AuthenticationRequired("invalid or expired bearer token") from None
        return dict(decoded.claims)
