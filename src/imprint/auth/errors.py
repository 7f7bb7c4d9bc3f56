"""Errors of the OAuth 2.0 endpoints, named as RFC 6749 section 5.2 names them.

::

    ImprintError
    └── OAuthError               rendered as {"error", "error_description"}, not problem+json
        ├── InvalidClient        401: unknown client, wrong secret, no authentication
        ├── InvalidGrant         400: code unknown, used, expired, PKCE mismatch, ...
        ├── UnauthorizedClient   400: the client may not use this grant type
        ├── UnsupportedGrantType 400
        ├── InvalidScope         400: a scope the client was not given
        └── OAuthInvalidRequest  400: a parameter is missing or malformed
"""

from __future__ import annotations

from imprint.errors import ImprintError

__all__ = [
    "InvalidClient",
    "InvalidGrant",
    "InvalidScope",
    "OAuthError",
    "OAuthInvalidRequest",
    "UnauthorizedClient",
    "UnsupportedGrantType",
]


class OAuthError(ImprintError):
    code = "oauth_error"
    error = "server_error"
    status = 400


class InvalidClient(OAuthError):
    code = "oauth_invalid_client"
    error = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    code = "oauth_invalid_grant"
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    code = "oauth_unauthorized_client"
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    code = "oauth_unsupported_grant_type"
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    code = "oauth_invalid_scope"
    error = "invalid_scope"


class OAuthInvalidRequest(OAuthError):
    code = "oauth_invalid_request"
    error = "invalid_request"
