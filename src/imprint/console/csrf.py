"""CSRF protection for every console form.

The rule: every ``<form method=post>`` carries ``{{ csrf_field() }}`` and every POST
handler checks it with :func:`check_csrf` (pages.py's ``form_of`` does it for you) before
anything else. Signed in, the token is the session's own (sealed in the session cookie).
Before sign-in (the login form) it is an HMAC of a random ``__Host-`` cookie, as the
relay page does: a page on another origin can neither read nor set that cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from fastapi import Request, Response
from markupsafe import Markup, escape

from imprint.errors import PermissionDenied

__all__ = [
    "LOGIN_COOKIE",
    "CsrfRefused",
    "check_csrf",
    "csrf_field",
    "login_token",
    "set_login_cookie",
]

LOGIN_COOKIE = "__Host-imprint-console-login"
FIELD = "csrf"
_COOKIE = re.compile(r"[A-Za-z0-9_-]{32,64}")


class CsrfRefused(PermissionDenied):
    code = "csrf_refused"


def csrf_field(token: str) -> Markup:
    """The hidden input a template puts in every POST form."""
    return Markup('<input type="hidden" name="csrf" value="{}">').format(escape(token))


def _login_cookie(request: Request) -> str | None:
    value = request.cookies.get(LOGIN_COOKIE)
    return value if value is not None and _COOKIE.fullmatch(value) else None


def login_token(request: Request) -> tuple[str, str]:
    """(cookie, token) for the sign-in form; the cookie is reused when present."""
    cookie = _login_cookie(request) or secrets.token_urlsafe(32)
    token = hmac.new(cookie.encode("ascii"), b"console-login", hashlib.sha256).hexdigest()
    return cookie, token


def set_login_cookie(response: Response, cookie: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, cookie, path="/", secure=True, httponly=True, samesite="strict"
    )


def check_csrf(expected: str | None, given: object) -> None:
    """Refuse the form unless ``given`` equals the expected token.

    Raises:
        CsrfRefused: missing, stale or foreign form (403 ``csrf_refused``).
    """
    if (
        expected is None
        or not isinstance(given, str)
        or not hmac.compare_digest(expected.encode(), given.encode())
    ):
        raise CsrfRefused(
            "the form is stale or did not come from this console: reload the page and try again"
        )


def check_login_csrf(request: Request, given: object) -> None:
    cookie = _login_cookie(request)
    expected = None
    if cookie is not None:
        expected = hmac.new(cookie.encode("ascii"), b"console-login", hashlib.sha256).hexdigest()
    check_csrf(expected, given)
