"""Signing in to the console through the external OpenID provider (``auth.oidc``).

Shown when ``auth.oidc.console_client_id`` is set. The flow is the authorization code
with PKCE (S256): ``/console/login/oidc`` sends the browser to the provider's
``authorization_endpoint`` (from its discovery document) with a fresh ``state``; the
state, the PKCE verifier and the page to return to travel in a sealed, short-lived
``__Host-`` cookie. ``/console/login/oidc/callback`` checks the state, redeems the code
at the provider's ``token_endpoint``, and verifies the access token exactly as the API
does (issuer, audience, signature from the provider's JWKS, then the owner and roles
claims). The console session then carries that principal until the token expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import urllib.request
from typing import Annotated, Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.auditing import audit
from imprint.auth.oidc import _checked_url, _fetch_json
from imprint.clock import unix_seconds
from imprint.console.pages import ConsoleRoute, error_page, redirect, runtime
from imprint.console.session import start_session
from imprint.errors import AuthenticationRequired
from imprint.runtime import Runtime
from imprint.sealing import SealedSecretInvalid

__all__ = ["enabled", "router"]

router = APIRouter(route_class=ConsoleRoute)

FLOW_COOKIE = "__Host-imprint-oidc"
_CONTEXT = "console:oidc"
_FLOW_SECONDS = 600
CALLBACK = "/console/login/oidc/callback"


def enabled(rt: Runtime) -> bool:
    """Whether the sign-in page offers the external provider."""
    return rt.settings.auth.oidc.console_client_id is not None and rt.external_oidc is not None


def _endpoints(rt: Runtime) -> tuple[str, str]:
    provider = rt.external_oidc
    assert provider is not None
    discovery = _fetch_json(provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
    authorize, token = discovery.get("authorization_endpoint"), discovery.get("token_endpoint")
    if not isinstance(authorize, str) or not isinstance(token, str):
        raise AuthenticationRequired("the identity provider's discovery document is incomplete")
    return (
        _checked_url(authorize, "authorization_endpoint"),
        _checked_url(token, "token_endpoint"),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@router.get("/login/oidc")
async def start(
    request: Request, next: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    rt = runtime(request)
    if not enabled(rt):
        return error_page(request, 404, "not_found", "No external sign-in is configured.")
    authorize, _ = await run_in_threadpool(_endpoints, rt)
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    target = next if next and next.startswith("/console") and not next.startswith("//") else ""
    flow = {"s": state, "v": verifier, "t": target, "e": unix_seconds(rt.clock) + _FLOW_SECONDS}
    query = {
        "response_type": "code",
        "client_id": rt.settings.auth.oidc.console_client_id or "",
        "redirect_uri": rt.settings.server.base_url() + CALLBACK,
        "scope": "openid",
        "state": state,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in authorize else "?"
    response = Response(
        status_code=303,
        headers={"Location": authorize + separator + urlencode(query), "Cache-Control": "no-store"},
    )
    response.set_cookie(
        FLOW_COOKIE,
        _b64(rt.box.seal(json.dumps(flow).encode(), _CONTEXT)),
        max_age=_FLOW_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back
    )
    return response


def _flow(rt: Runtime, request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLOW_COOKIE)
    if not raw or len(raw) > 2000:
        return None
    try:
        data = json.loads(
            rt.box.open(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), _CONTEXT)
        )
    except (binascii.Error, ValueError, SealedSecretInvalid):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("e"), int):
        return None
    if data["e"] < unix_seconds(rt.clock):
        return None
    return data


def _redeem(rt: Runtime, code: str, verifier: str) -> str:
    """The access token for ``code``, from the provider's token endpoint."""
    _, token_url = _endpoints(rt)
    oidc = rt.settings.auth.oidc
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": rt.settings.server.base_url() + CALLBACK,
        "code_verifier": verifier,
        "client_id": oidc.console_client_id or "",
    }
    if oidc.console_client_secret is not None:
        form["client_secret"] = oidc.console_client_secret.get_secret_value()
    request = urllib.request.Request(  # noqa: S310 (an https URL, checked above)
        token_url,
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            body = json.loads(answer.read(1_000_000))
    except HTTPError as exc:
        raise AuthenticationRequired(
            f"the identity provider refused the sign-in (HTTP {exc.code})"
        ) from None
    except (URLError, OSError, ValueError) as exc:
        raise AuthenticationRequired(
            f"the identity provider cannot be reached ({type(exc).__name__})"
        ) from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise AuthenticationRequired("the identity provider answered no access token")
    return token


@router.get("/login/oidc/callback")
async def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    rt = runtime(request)
    flow = _flow(rt, request) if enabled(rt) else None
    if (
        flow is None
        or state is None
        or not hmac.compare_digest(str(flow.get("s", "")).encode(), state.encode())
    ):
        return error_page(
            request, 400, "oidc_state_invalid", "The sign-in expired or did not start here."
        )
    if error is not None or code is None:
        return error_page(
            request, 401, "oidc_refused", f"The identity provider refused: {error or 'no code'}."
        )
    provider = rt.external_oidc
    assert provider is not None

    def verify() -> tuple[Any, int]:
        token = _redeem(rt, code, str(flow["v"]))
        claims = provider.verify(token)
        return provider.principal(claims), int(claims["exp"])

    try:
        principal, expires = await run_in_threadpool(verify)
    except AuthenticationRequired as exc:
        await run_in_threadpool(
            audit,
            rt,
            "external:?",
            "user.login",
            "user",
            None,
            outcome="failure",
            via="console-oidc",
        )
        return error_page(request, 401, exc.code, exc.message)
    await run_in_threadpool(
        audit,
        rt,
        principal,
        "user.login",
        "user",
        principal.subject,
        org_id=principal.owner,
        via="console-oidc",
    )
    response = redirect(str(flow.get("t") or "/console/"))
    start_session(
        rt, response, principal.subject, principal.owner, external=principal, expires_at=expires
    )
    response.delete_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response
