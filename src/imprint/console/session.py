"""The console's session: a sealed cookie, checked against the user store on every request.

The cookie holds a random session id, the user id, the organization chosen at sign-in,
the CSRF token of the session, when it was issued and its expiry, sealed with the instance's
:class:`~imprint.sealing.SecretBox` (AES-GCM: it can be neither read nor forged without
the key-encryption key). It is ``__Host-`` prefixed, ``Secure``, ``HttpOnly`` and
``SameSite=Lax``. Every request loads the user again, so a disabled user, a changed
membership or a changed password (sessions started before it end) takes effect at
once. Signing out deletes the cookie and records the session as ended
(:class:`~imprint.store.console_sessions.SqlEndedSessions`), so a copy of the cookie
taken before is refused from then on.

Sign-in uses the same checks as the ``/oauth/authorize`` form: the shared failure
limiter, argon2 verification, disabled users refused, every attempt audited. With an
external OpenID provider configured for the console (``auth.oidc.console_client_id``,
see :mod:`imprint.console.oidc`) the session carries the principal the provider's
token named, until that token's expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request, Response

from imprint.app.auditing import audit
from imprint.app.sign_ins import check_password
from imprint.attestation.base import TooManyAttempts
from imprint.clock import unix_seconds
from imprint.errors import NotFound
from imprint.runtime import Runtime
from imprint.sealing import SealedSecretInvalid
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = [
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "ConsoleSession",
    "LoginFailed",
    "clear_session",
    "end_session",
    "load_session",
    "password_login",
    "start_session",
]

SESSION_COOKIE = "__Host-imprint-console"
SESSION_SECONDS = 8 * 3600
_CONTEXT = "console:session"
_MAX_COOKIE = 2000


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: which session, who, which organization, its CSRF token,
    until when."""

    session_id: str
    user_id: str
    owner: str | None
    csrf: str
    expires_at: int
    principal: Principal


class LoginFailed(Exception):
    """Sign-in refused; ``message`` is what the page shows."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _principal(
    runtime: Runtime, user_id: str, owner: str | None, issued_at: int
) -> Principal | None:
    try:
        user = runtime.users.get(user_id)
    except NotFound:
        return None
    if user.disabled or user.session_outdated(issued_at):
        return None
    roles = dict(user.memberships or {})
    return Principal(
        kind="user",
        subject=user.id,
        name=user.username,
        memberships=roles,
        owner=owner if owner in roles else None,
    )


def password_login(
    runtime: Runtime, request: Request, username: str, password: str
) -> tuple[str, str | None]:
    """Check a user name and password as the OAuth sign-in form does.

    Returns:
        (user id, the organization the session acts for).

    Raises:
        LoginFailed: wrong name or password, a disabled user, or too many attempts.
    """
    source = request.client.host if request.client else None
    try:
        user = check_password(runtime, source, username, password, via="console")
    except TooManyAttempts:
        raise LoginFailed("Too many failed attempts; try again later.", 429) from None
    if user is None:
        raise LoginFailed("Wrong user name or password.", 401)
    roles = sorted(user.memberships or {})
    owner = roles[0] if roles else None
    audit(
        runtime, f"user:{user.username}", "user.login", "user", user.id, org_id=owner, via="console"
    )
    return user.id, owner


def start_session(
    runtime: Runtime,
    response: Response,
    user_id: str,
    owner: str | None,
    *,
    external: Principal | None = None,
    expires_at: int | None = None,
) -> None:
    """Set a fresh session cookie (a new CSRF token too) on ``response``.

    ``external``: the principal an external provider's token named; the session then
    carries it (there is no local user to load again) and ends no later than
    ``expires_at``, the token's expiry.
    """
    now = unix_seconds(runtime.clock)
    expires = now + SESSION_SECONDS
    if expires_at is not None:
        expires = min(expires, expires_at)
    payload: dict[str, object] = {
        "s": secrets.token_urlsafe(18),
        "i": now,
        "u": user_id,
        "o": owner,
        "c": secrets.token_urlsafe(32),
        "e": expires,
    }
    if external is not None:
        payload["x"] = {
            "n": external.name,
            "m": {org: role.value for org, role in external.memberships.items()},
        }
    sealed = runtime.box.seal(json.dumps(payload).encode(), _CONTEXT)
    response.set_cookie(
        SESSION_COOKIE,
        base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("="),
        max_age=max(1, expires - now),
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )


def _external(user_id: str, owner: str | None, data: object) -> Principal | None:
    if not isinstance(data, dict):
        return None
    name, memberships = data.get("n"), data.get("m")
    if not isinstance(name, str) or not isinstance(memberships, dict):
        return None
    try:
        roles = {str(org): Role(role) for org, role in memberships.items()}
    except ValueError:
        return None
    return Principal(kind="external", subject=user_id, name=name, memberships=roles, owner=owner)


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


def load_session(runtime: Runtime, request: Request) -> ConsoleSession | None:
    """The session of this request; None when there is none, or it is invalid or over."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > _MAX_COOKIE:
        return None
    try:
        sealed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        payload = json.loads(runtime.box.open(sealed, _CONTEXT))
        session_id, user_id, issued = payload["s"], payload["u"], payload["i"]
        owner, csrf, expires = payload["o"], payload["c"], payload["e"]
    except (binascii.Error, ValueError, KeyError, TypeError, SealedSecretInvalid):
        return None
    if not all(isinstance(value, str) for value in (session_id, user_id, csrf)):
        return None
    if not all(isinstance(value, int) for value in (issued, expires)) or expires <= unix_seconds(
        runtime.clock
    ):
        return None
    if runtime.ended_sessions.is_ended(_digest(session_id)):
        return None
    owner = owner if isinstance(owner, str) else None
    if "x" in payload:
        principal = _external(user_id, owner, payload["x"])
    else:
        principal = _principal(runtime, user_id, owner, issued)
    if principal is None:
        return None
    return ConsoleSession(session_id, user_id, principal.owner, csrf, expires, principal)


def end_session(runtime: Runtime, session: ConsoleSession) -> None:
    """End ``session`` on the server: its cookie, wherever a copy is, no longer signs in."""
    runtime.ended_sessions.end(
        _digest(session.session_id),
        datetime.fromtimestamp(session.expires_at, UTC),
        runtime.clock.now(),
    )


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
