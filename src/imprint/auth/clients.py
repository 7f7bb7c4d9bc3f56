"""OAuth clients: machines (client credentials) and applications people log in through
(authorization code with PKCE).

Clients come from two places. Those created through the API or CLI live in the
database with a SHA-256 of a generated 256-bit secret (shown once). Development clients
are configured in YAML under ``auth.clients`` with the field names of plgd's
``mockoauthserver.oauth`` list (name, clientID, clientSecret, grantType, scopes,
audience, redirectURL) and are read at start. Several configured clients may share a
client id (the plgd seed's ``test``); the grant type picks between them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from imprint.auth.errors import InvalidClient, UnauthorizedClient
from imprint.errors import ConfigurationError, InvalidValue, NotFound
from imprint.settings import OAuthClientSettings
from imprint.tenancy.roles import Role

__all__ = [
    "AUTHORIZATION_CODE",
    "CLIENT_CREDENTIALS",
    "COMMAND_LINE_CLIENT",
    "DEVICE_CODE",
    "ClientRegistry",
    "IssuedClient",
    "OAuthClient",
    "OAuthClientStore",
    "configured_clients",
    "create_client",
    "new_client_secret",
    "secret_digest",
    "valid_redirect_uri",
]

CLIENT_CREDENTIALS = "client_credentials"
AUTHORIZATION_CODE = "authorization_code"
GRANT_TYPES = (CLIENT_CREDENTIALS, AUTHORIZATION_CODE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,99}")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,100}")  # RFC 6749 scope-token
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A client; ``secret_sha256`` None is a public client (PKCE only, no secret)."""

    client_id: str
    name: str
    secret_sha256: str | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    redirect_uris: tuple[str, ...] = ()
    org_id: str | None = None
    role: Role = Role.VIEWER
    created_at: datetime | None = None
    configured: bool = False

    @property
    def public(self) -> bool:
        return self.secret_sha256 is None

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """A new client and its secret, shown once and never stored."""

    client: OAuthClient
    secret: str | None


class OAuthClientStore(Protocol):
    def add(self, client: OAuthClient) -> None: ...
    def find(self, client_id: str) -> OAuthClient | None: ...
    def search(self, org_ids: set[str] | None, limit: int) -> Sequence[OAuthClient]: ...
    def remove(self, client_id: str) -> None: ...


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_client_secret() -> tuple[str, str]:
    """A new client secret: (the secret, shown once; its SHA-256, stored)."""
    secret = secrets.token_urlsafe(32)
    return secret, secret_digest(secret)


def valid_redirect_uri(uri: str) -> bool:
    """https anywhere; http only to this machine (native apps and development)."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.hostname or len(uri) > 1000:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in _LOOPBACK


def _check_fields(
    name: str,
    grant_types: Iterable[str],
    scopes: Iterable[str],
    redirect_uris: Iterable[str],
    audience: str | None,
) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidValue("name: 1 to 100 of letters, digits, space and . _ @ : -")
    grants = list(grant_types)
    if not grants or set(grants) - set(GRANT_TYPES):
        raise InvalidValue(f"grant_types: one or both of {', '.join(GRANT_TYPES)}")
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise InvalidValue(f"scopes: {scope!r} is not a scope token")
    uris = list(redirect_uris)
    for uri in uris:
        if not valid_redirect_uri(uri):
            raise InvalidValue("redirect_uris: https URLs (http only to localhost), no fragment")
    if AUTHORIZATION_CODE in grants and not uris:
        raise InvalidValue("redirect_uris: the authorization_code grant needs at least one")
    if audience is not None and not 1 <= len(audience) <= 500:
        raise InvalidValue("audience: 1 to 500 characters")


def create_client(
    store: OAuthClientStore,
    name: str,
    *,
    grant_types: Sequence[str],
    scopes: Sequence[str] = (),
    audience: str | None = None,
    redirect_uris: Sequence[str] = (),
    org_id: str | None = None,
    role: Role = Role.VIEWER,
    public: bool = False,
    at: datetime,
) -> IssuedClient:
    """Create a client with a generated id and secret.

    Raises:
        InvalidValue: a bad field, or a public client asking for client credentials.
    """
    _check_fields(name, grant_types, scopes, redirect_uris, audience)
    if public and CLIENT_CREDENTIALS in grant_types:
        raise InvalidValue("public: a client_credentials client needs a secret")
    secret, digest = (None, None) if public else new_client_secret()
    client = OAuthClient(
        client_id=f"cli-{secrets.token_hex(8)}",
        name=name,
        secret_sha256=digest,
        grant_types=tuple(dict.fromkeys(grant_types)),
        scopes=tuple(dict.fromkeys(scopes)),
        audience=audience,
        redirect_uris=tuple(dict.fromkeys(redirect_uris)),
        org_id=org_id,
        role=role,
        created_at=at.replace(microsecond=0),
    )
    store.add(client)
    return IssuedClient(client, secret)


def encode_list(values: Iterable[str]) -> str:
    return json.dumps(list(values))


class ClientRegistry:
    """Configured development clients first, then the built-in ones (the command line's,
    never listed), then the database."""

    def __init__(
        self,
        store: OAuthClientStore,
        configured: Sequence[OAuthClient],
        builtin: Sequence[OAuthClient] = (),
    ) -> None:
        self._store = store
        self._configured = list(configured)
        self._builtin = list(builtin)

    @property
    def configured(self) -> Sequence[OAuthClient]:
        return self._configured

    def candidates(self, client_id: str) -> list[OAuthClient]:
        found = [
            c
            for c in [*self._configured, *self._builtin]
            if hmac.compare_digest(c.client_id, client_id)
        ]
        stored = self._store.find(client_id) if len(client_id) <= 100 else None
        return [*found, *([stored] if stored is not None else [])]

    def get(self, client_id: str) -> OAuthClient:
        """Raises NotFound."""
        found = self.candidates(client_id)
        if not found:
            raise NotFound(f"no OAuth client {client_id!r}")
        return found[0]

    def authenticate(self, client_id: str, secret: str | None, grant_type: str) -> OAuthClient:
        """The client that ``client_id`` and ``secret`` prove, allowed ``grant_type``.

        A public client is authenticated by its id alone (PKCE protects its codes).

        Raises:
            InvalidClient: unknown id, wrong or missing secret (one message for all).
            UnauthorizedClient: the client may not use ``grant_type``.
        """
        presented = secret_digest(secret) if secret is not None else None
        proven: list[OAuthClient] = []
        for client in self.candidates(client_id):
            if client.secret_sha256 is None:
                if presented is None:
                    proven.append(client)
            elif presented is not None and hmac.compare_digest(client.secret_sha256, presented):
                proven.append(client)
        if not proven:
            raise InvalidClient("client authentication failed")
        for client in proven:
            if grant_type in client.grant_types:
                return client
        raise UnauthorizedClient(f"this client may not use the {grant_type} grant")


#: The device authorization grant (RFC 8628): only the command line's own client uses it.
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

#: The command line's own client: public (no secret), authorization code with PKCE, its
#: code delivered to a loopback address that nothing need listen on (``imprint login``
#: posts the user's password to the sign-in form and reads the code from the redirect),
#: and the device authorization grant (``imprint login --device``: the user approves in
#: the console, the password never passes through the command line).
COMMAND_LINE_CLIENT = OAuthClient(
    client_id="imprint-cli",
    name="imprint command line",
    secret_sha256=None,
    grant_types=(AUTHORIZATION_CODE, DEVICE_CODE),
    redirect_uris=("http://127.0.0.1/imprint-cli",),
    configured=True,
)

_GRANT_NAMES = {"clientCredentials": CLIENT_CREDENTIALS, "authorizationCode": AUTHORIZATION_CODE}


def configured_clients(items: Sequence[OAuthClientSettings]) -> list[OAuthClient]:
    """The development clients of ``auth.clients``, checked like any other client.

    Raises:
        ConfigurationError: naming the client and the field.
    """
    clients = []
    for index, item in enumerate(items):
        grant = _GRANT_NAMES[item.grant_type]
        redirects = [item.redirect_url] if item.redirect_url else []
        secret = None if item.client_secret is None else item.client_secret.get_secret_value()
        try:
            _check_fields(item.name, [grant], item.scopes, redirects, item.audience)
            if secret is None and grant == CLIENT_CREDENTIALS:
                raise InvalidValue("clientSecret: a clientCredentials client needs one")
        except InvalidValue as exc:
            raise ConfigurationError(f"auth.clients.{index} ({item.name}): {exc.message}") from None
        clients.append(
            OAuthClient(
                client_id=item.client_id,
                name=item.name,
                secret_sha256=None if secret is None else secret_digest(secret),
                grant_types=(grant,),
                scopes=tuple(item.scopes),
                audience=item.audience,
                redirect_uris=tuple(redirects),
                org_id=item.owner,
                role=Role(item.role),
                configured=True,
            )
        )
    return clients
