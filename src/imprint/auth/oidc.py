"""An external OpenID Connect provider as the alternative to imprint's own tokens.

Its access tokens are verified against its JWKS (``auth.oidc.jwks_url``, or the
``jwks_uri`` of its discovery document), its issuer and the configured audience. The
organization comes from the owner claim and the role from the roles claim; both
claim names are configurable. The JWKS is cached and fetched again, at most every 30
seconds, when a token names a key it does not hold (the provider rotated).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from imprint.clock import Clock, SystemClock, unix_seconds
from imprint.errors import AuthenticationRequired, ConfigurationError
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role, highest

__all__ = ["ExternalProvider"]

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
REFRESH_SECONDS = 300
MIN_REFETCH_SECONDS = 30


def _checked_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return url
    raise ConfigurationError(f"auth.oidc.{what}: an https URL (http only to localhost)")


def _fetch_json(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            data = json.loads(response.read(1_000_000))
    except (URLError, OSError, ValueError) as exc:
        raise AuthenticationRequired(
            f"the identity provider's keys cannot be fetched ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise AuthenticationRequired("the identity provider's keys are not a JSON object")
    return data


class ExternalProvider:
    """Verifies tokens of one external issuer and maps them to a principal."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None,
        owner_claim: str,
        roles_claim: str,
        default_role: Role | None,
        clock: Clock | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.owner_claim = owner_claim
        self.roles_claim = roles_claim
        self.default_role = default_role
        self._clock = clock or SystemClock()
        self._jwks_url = None if jwks_url is None else _checked_url(jwks_url, "jwks_url")
        _checked_url(issuer, "issuer")
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _jwks_location(self) -> str:
        if self._jwks_url is None:
            discovery = _fetch_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            uri = discovery.get("jwks_uri")
            if not isinstance(uri, str):
                raise AuthenticationRequired("the identity provider names no jwks_uri")
            self._jwks_url = _checked_url(uri, "jwks_url")
        return self._jwks_url

    def _key_set(self, *, refresh: bool) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > REFRESH_SECONDS
            if stale or (refresh and age > MIN_REFETCH_SECONDS):
                try:
                    self._keys = KeySet.import_key_set(_fetch_json(self._jwks_location()))  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError):
                    raise AuthenticationRequired(
                        "the identity provider's JWKS is invalid"
                    ) from None
                self._fetched_at = time.monotonic()
            assert self._keys is not None
            return self._keys

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token from this provider for our audience.

        Raises:
            AuthenticationRequired: anything wrong with it.
        """
        for refresh in (False, True):
            try:
                decoded = jwt.decode(token, self._key_set(refresh=refresh), algorithms=ALGORITHMS)
            except (ValueError, JoseError) as exc:
                if not refresh and "kid" in str(exc).lower():
                    continue  # maybe a new key: fetch the JWKS again once
                raise AuthenticationRequired("invalid bearer token") from None
            break
        try:
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

    def principal(self, claims: dict[str, Any]) -> Principal:
        """Map verified claims: owner claim -> organization, roles claim -> role.

        Raises:
            AuthenticationRequired: no owner claim, or no role and no default role.
        """
        owner = claims.get(self.owner_claim)
        if not isinstance(owner, str) or not owner:
            raise AuthenticationRequired(f"the token carries no {self.owner_claim} claim")
        role = highest(claims.get(self.roles_claim)) or self.default_role
        if role is None:
            raise AuthenticationRequired(f"the token carries no known role in {self.roles_claim}")
        subject = str(claims["sub"])
        return Principal(
            kind="external",
            subject=subject,
            name=str(claims.get("preferred_username") or claims.get("email") or subject)[:150],
            memberships={owner: role},
            owner=owner,
        )
