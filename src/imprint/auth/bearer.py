"""Bearer credentials of the admin API -> a :class:`~imprint.tenancy.access.Principal`.

Three kinds are accepted: an API key (``imp_...``, the whole instance), an access token
imprint issued, and an access token of the configured external OpenID provider. Which
issuer a JWT claims decides how it is verified; nothing in it is trusted before that.
For imprint's own tokens the roles come from the database at every request, so taking
a membership away or deleting a client takes effect at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from typing import Any

from imprint.auth.api_keys import ApiKey, ApiKeyStore, authenticate
from imprint.auth.clients import ClientRegistry
from imprint.auth.oidc import ExternalProvider
from imprint.auth.tokens import TokenService
from imprint.clock import Clock, SystemClock
from imprint.errors import AuthenticationRequired, NotFound
from imprint.tenancy.access import Principal
from imprint.tenancy.users import UserStore

__all__ = ["LAST_USED_RESOLUTION", "BearerAuthenticator", "api_key_principal"]

#: ``last_used_at`` of an API key is written at most this often (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_principal(key: ApiKey) -> Principal:
    return Principal(kind="api-key", subject=key.key_id, name=key.name, instance_admin=True)


def _unverified_issuer(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16_000:
        return None
    try:
        payload: Any = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: nested deep
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


class BearerAuthenticator:
    def __init__(
        self,
        *,
        api_keys: ApiKeyStore,
        tokens: TokenService,
        users: UserStore,
        clients: ClientRegistry,
        external: ExternalProvider | None,
        clock: Clock | None = None,
    ) -> None:
        self._api_keys = api_keys
        self._tokens = tokens
        self._users = users
        self._clients = clients
        self._external = external
        self._clock = clock or SystemClock()

    def external(self, token: str) -> bool:
        """Whether ``token`` claims to be the external provider's: verifying it may
        fetch the provider's keys over the network."""
        return (
            self._external is not None
            and not token.startswith("imp_")
            and _unverified_issuer(token) == self._external.issuer
        )

    def principal(self, token: str) -> Principal:
        """Who ``token`` stands for.

        Raises:
            AuthenticationRequired: an unknown, invalid, expired or revoked credential.
        """
        if token.startswith("imp_"):
            now = self._clock.now()
            key = authenticate(self._api_keys, token, now)
            if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
                self._api_keys.touch(key.key_id, now)
            return api_key_principal(key)
        issuer = _unverified_issuer(token)
        if issuer is not None and issuer == self._tokens.issuer:
            return self._own(self._tokens.verify(token))
        if self._external is not None and issuer == self._external.issuer:
            return self._external.principal(self._external.verify(token))
        raise AuthenticationRequired("invalid bearer token: not an API key or a known issuer's JWT")

    def _own(self, claims: dict[str, Any]) -> Principal:
        subject = str(claims["sub"])
        client_id = str(claims.get("client_id", ""))
        owner = claims.get(self._tokens.owner_claim)
        owner = owner if isinstance(owner, str) else None
        if subject == client_id:
            for client in self._clients.candidates(client_id):
                if client.org_id == owner:
                    memberships = {owner: client.role} if owner is not None else {}
                    return Principal(
                        kind="client",
                        subject=client_id,
                        name=client_id,
                        memberships=memberships,
                        owner=owner,
                    )
            raise AuthenticationRequired("the token's client no longer exists")
        try:
            user = self._users.get(subject)
        except NotFound:
            raise AuthenticationRequired("the token's user no longer exists") from None
        if user.disabled:
            raise AuthenticationRequired("the token's user is disabled")
        issued = claims.get("iat")
        if isinstance(issued, int | float) and user.session_outdated(issued):
            raise AuthenticationRequired(
                "the token was issued before its user's password changed or she was disabled"
            )
        return Principal(
            kind="user",
            subject=user.id,
            name=user.username,
            memberships=dict(user.memberships or {}),
            owner=owner,
        )
