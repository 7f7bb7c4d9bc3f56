"""Errors of the OAuth 2.0 endpoints, named as RFC 6749 section 5.2 names them.

::

    ImprintError
    └── OAuthError               rendered as {"error", "error_description"}, not problem+json
        ├── InvalidClient        401: unknown client, wrong secret, no authentication
        ├── InvalidGrant         400: code unknown, used, expired, PKCE mismatch, ...
        ├── UnauthorizedClient   400: the client may not use this grant type
        ├── UnsupportedGrantType 400
        ├── InvalidScope         400: a scope the client was not given
        ├── OAuthInvalidRequest  400: a parameter is missing or malformed
        └── DevicePollError      400: a device code's poll (RFC 8628 section 3.5):
                                 authorization_pending, slow_down, expired_token,
                                 access_denied
"""

from __future__ import annotations

from imprint.errors import ImprintError

__all__ = [
    "DevicePollError",
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


class DevicePollError(OAuthError):
    """A device code that gives no token (yet); ``error`` is the RFC 8628 answer."""

    code = "oauth_device_poll"

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
