"""Hub tokens for devices: an access token for the device's cloud (the plgd hub) in the
bundle, bound to the device's owner.

An enrollment can name an OAuth provider (``hub.authorization.provider``). At
provisioning imprint gets a client-credentials token from it:

- no ``token_url``: from imprint's own OAuth server. The client id and secret must
  authenticate against the stored or configured OAuth clients (``auth.clients``), and
  the token's owner claim is the enrollment's owner: the client acts for the owner;
- with ``token_url``: from that external token endpoint (HTTP Basic, 5 s timeout).

Either way the token's payload is decoded and its owner claim (``auth.owner_claim``)
must be present and equal the enrollment's owner, or the request is refused: a device
must never be handed a token that acts for someone else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit

from imprint.auth.clients import CLIENT_CREDENTIALS, ClientRegistry
from imprint.auth.errors import OAuthError
from imprint.auth.tokens import TokenService
from imprint.clock import Clock, SystemClock
from imprint.errors import InvalidValue, UpstreamError

__all__ = [
    "HubProvider",
    "HubToken",
    "HubTokenOwnerMismatch",
    "HubTokenSource",
    "HubTokenUnavailable",
    "validate_hub_provider",
]

TIMEOUT_SECONDS = 5.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,99}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,100}")  # RFC 6749 scope-token
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_MAX_ANSWER = 1_000_000


class HubTokenUnavailable(UpstreamError):
    """The provider gave no token: unreachable, refused the client, or answered garbage."""

    code = "hub_token_unavailable"


class HubTokenOwnerMismatch(UpstreamError):
    """The token's owner claim is missing or names someone else than the enrollment."""

    code = "hub_token_owner_mismatch"


@dataclass(frozen=True, slots=True)
class HubProvider:
    """The OAuth provider an enrollment gets hub tokens from.

    Attributes:
        name: a label (plgd matches it with the hub's provider of the same name).
        token_url: an external token endpoint; None is imprint's own OAuth server.
    """

    name: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    token_url: str | None = None


@dataclass(frozen=True, slots=True)
class HubToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime

    def as_bundle(self) -> dict[str, str]:
        """The bundle's ``tokens.hub`` entry."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at.isoformat(),
        }


def _token_url_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if not parts.hostname or parts.fragment or len(url) > 500:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)


def validate_hub_provider(provider: HubProvider) -> None:
    """Check a hub provider before it is stored.

    Raises:
        InvalidValue: naming the offending field.
    """
    where = "hub.authorization.provider"
    if not _NAME.fullmatch(provider.name):
        raise InvalidValue(f"{where}.name: 1 to 100 of letters, digits, space and . _ @ : -")
    if not 1 <= len(provider.client_id) <= 100:
        raise InvalidValue(f"{where}.client_id: 1 to 100 characters")
    if not 1 <= len(provider.client_secret) <= 500:
        raise InvalidValue(f"{where}.client_secret: 1 to 500 characters")
    for scope in provider.scopes:
        if not _SCOPE.fullmatch(scope):
            raise InvalidValue(f"{where}.scopes: {scope!r} is not a scope token")
    if provider.audience is not None and not 1 <= len(provider.audience) <= 500:
        raise InvalidValue(f"{where}.audience: 1 to 500 characters")
    if provider.token_url is not None and not _token_url_allowed(provider.token_url):
        raise InvalidValue(f"{where}.token_url: an https URL (http only to localhost)")


def _claims_of(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified (we fetched it ourselves), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


class HubTokenSource:
    """Gets hub tokens for devices, from imprint itself or an external provider.

    Args:
        clients: the OAuth clients of imprint's own server.
        tokens: imprint's token signer.
        owner_claim: the claim that must carry the enrollment's owner.
        clock: the time a token without ``exp`` counts its ``expires_in`` from.
    """

    def __init__(
        self,
        *,
        clients: ClientRegistry,
        tokens: TokenService,
        owner_claim: str,
        clock: Clock | None = None,
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self.owner_claim = owner_claim
        self._clock = clock or SystemClock()

    def token_for(self, provider: HubProvider, owner: str) -> HubToken:
        """A client-credentials token acting for ``owner``.

        Raises:
            HubTokenUnavailable: no token could be had.
            HubTokenOwnerMismatch: the token does not carry ``owner`` in the owner claim.
        """
        if provider.token_url is None:
            access_token, token_type, expires_in = self._own(provider, owner)
        else:
            access_token, token_type, expires_in = self._external(provider, provider.token_url)
        claims = _claims_of(access_token)
        if claims is None:
            raise HubTokenUnavailable(
                f"hub provider {provider.name!r} returned a token that is not a JWT: its "
                "owner claim cannot be checked"
            )
        found = claims.get(self.owner_claim)
        if found is None:
            raise HubTokenOwnerMismatch(
                f"the token of hub provider {provider.name!r} has no {self.owner_claim} claim"
            )
        if found != owner:
            raise HubTokenOwnerMismatch(
                f"the token of hub provider {provider.name!r} acts for owner {str(found)[:100]!r}, "
                f"not for the enrollment's owner {owner!r}"
            )
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            expires_at = datetime.fromtimestamp(int(exp), UTC)
        elif expires_in is not None:
            expires_at = self._clock.now().replace(microsecond=0) + timedelta(seconds=expires_in)
        else:
            raise HubTokenUnavailable(
                f"the token of hub provider {provider.name!r} says nothing of when it expires"
            )
        return HubToken(access_token, token_type, expires_at)

    def _own(self, provider: HubProvider, owner: str) -> tuple[str, str, int | None]:
        """Issue the token with imprint's own OAuth server, as its token endpoint would."""
        try:
            client = self._clients.authenticate(
                provider.client_id, provider.client_secret, CLIENT_CREDENTIALS
            )
        except OAuthError:
            raise HubTokenUnavailable(
                f"hub provider {provider.name!r}: imprint's OAuth server does not accept its "
                "client id and secret for the client-credentials grant"
            ) from None
        unknown = [s for s in provider.scopes if s not in client.scopes]
        if unknown:
            raise HubTokenUnavailable(
                f"hub provider {provider.name!r}: the OAuth client was not given the scope(s) "
                f"{' '.join(unknown)}"
            )
        if provider.audience and client.audience and provider.audience != client.audience:
            raise HubTokenUnavailable(
                f"hub provider {provider.name!r}: the OAuth client's tokens are for "
                f"{client.audience!r}, not {provider.audience!r}"
            )
        if client.org_id is not None and client.org_id != owner:
            raise HubTokenOwnerMismatch(
                f"hub provider {provider.name!r}: the OAuth client belongs to organization "
                f"{client.org_id!r} and cannot act for owner {owner!r}"
            )
        audience = provider.audience or client.audience
        if audience is None or audience == self._tokens.audience:
            # Without this a device would carry a token that opens imprint's admin API.
            raise HubTokenUnavailable(
                f"hub provider {provider.name!r}: a hub token needs the hub's audience (set "
                "it on the provider or the OAuth client), not imprint's own API"
            )
        scope: Sequence[str] = provider.scopes or client.scopes
        token, lifetime = self._tokens.issue(
            subject=client.client_id,
            client_id=client.client_id,
            audience=audience,
            scope=list(scope),
            owner=owner,
        )
        return token, "Bearer", lifetime

    def _external(self, provider: HubProvider, url: str) -> tuple[str, str, int | None]:
        """POST the client-credentials grant to an external token endpoint."""
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if provider.scopes:
            form["scope"] = " ".join(provider.scopes)
        if provider.audience:
            form["audience"] = provider.audience
        pair = f"{quote(provider.client_id, safe='')}:{quote(provider.client_secret, safe='')}"
        request = urllib.request.Request(  # noqa: S310 (the URL was checked: https or loopback)
            url,
            data=urlencode(form).encode(),
            headers={
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        where = f"hub provider {provider.name!r}"
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                answer = json.loads(response.read(_MAX_ANSWER))
        except HTTPError as exc:
            raise HubTokenUnavailable(
                f"{where} refused the client-credentials grant (HTTP {exc.code}{_oauth_error(exc)})"
            ) from None
        except (URLError, OSError, ValueError) as exc:
            raise HubTokenUnavailable(
                f"{where} cannot be reached or answered garbage ({type(exc).__name__})"
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise HubTokenUnavailable(f"{where} answered without an access_token")
        token_type = answer.get("token_type")
        expires_in = answer.get("expires_in")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool):
            expires_in = None
        return (
            answer["access_token"],
            token_type if isinstance(token_type, str) and token_type else "Bearer",
            expires_in,
        )


def _oauth_error(exc: HTTPError) -> str:
    """``, invalid_client`` from an RFC 6749 error answer; nothing else of the body."""
    try:
        body = json.loads(exc.read(10_000))
    except (OSError, ValueError):
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and re.fullmatch(r"[a-z_]{1,40}", error):
        return f", {error}"
    return ""
