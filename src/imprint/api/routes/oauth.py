"""The OAuth 2.0 authorization server: token endpoint, login (authorization code with
PKCE), the device authorization grant (RFC 8628, for ``imprint login --device``), JWKS
and the OpenID discovery document.

The token endpoint answers errors as RFC 6749 section 5.2 says (``{"error": ...}``),
not as problem+json: OAuth clients expect that shape. The login page is plain HTML
for now; the console comes later and uses the same endpoints.
"""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from imprint.api.device_plane import run_blocking
from imprint.api.identity import RuntimeDep
from imprint.app.device_logins import IssuedDeviceCode
from imprint.app.sign_ins import UserToken, check_password
from imprint.attestation.base import TooManyAttempts
from imprint.auth.clients import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DEVICE_CODE, OAuthClient
from imprint.auth.codes import valid_challenge
from imprint.auth.device_codes import PollAnswer
from imprint.auth.errors import (
    DevicePollError,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    OAuthError,
    OAuthInvalidRequest,
    UnsupportedGrantType,
)
from imprint.provisioning.ratelimit import guessable_keys, refusal_keys
from imprint.runtime import Runtime

router = APIRouter(tags=["oauth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}
_AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "organization",
)


# --- discovery and keys -------------------------------------------------------------------


@router.get("/.well-known/openid-configuration", summary="OpenID Connect discovery document")
def discovery(runtime: RuntimeDep) -> dict[str, Any]:
    base = runtime.settings.server.base_url()
    return {
        "issuer": runtime.tokens.issuer,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "device_authorization_endpoint": f"{base}/oauth/device_authorization",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "grant_types_supported": [AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DEVICE_CODE],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", runtime.tokens.owner_claim],
    }


@router.get("/.well-known/jwks.json", summary="The public keys that verify imprint's tokens")
def jwks(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(runtime.tokens.jwks(), headers={"Cache-Control": "max-age=60"})


@router.get("/oauth/jwks", include_in_schema=False)
def jwks_alias(runtime: RuntimeDep) -> JSONResponse:
    return jwks(runtime)


# --- token endpoint -----------------------------------------------------------------------


def _oauth_error(error: OAuthError, *, basic: bool) -> JSONResponse:
    headers = dict(_NO_STORE)
    if error.status == 401 and basic:
        headers["WWW-Authenticate"] = 'Basic realm="imprint"'
    body = {"error": error.error, "error_description": error.message}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _single(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise OAuthInvalidRequest(f"{name} is given more than once")
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str):
        raise OAuthInvalidRequest(f"{name} must be a plain form field")
    return value or None


def _client_credentials_of(request: Request, form: FormData) -> tuple[str, str | None, bool]:
    """(client_id, secret, used Basic) from the Authorization header or the form."""
    header = request.headers.get("authorization")
    form_id, form_secret = _single(form, "client_id"), _single(form, "client_secret")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient("use HTTP Basic or client_secret in the form")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidClient("malformed Basic credentials") from None
        client_id, sep, secret = decoded.partition(":")
        if not sep or form_secret is not None:
            raise InvalidClient("malformed Basic credentials")
        return unquote(client_id), unquote(secret), True
    if form_id is None:
        raise InvalidClient("client authentication is missing")
    return form_id, form_secret, False


def _scopes(requested: str | None, client: OAuthClient) -> list[str]:
    if requested is None:
        return list(client.scopes)
    wanted = requested.split()
    unknown = [s for s in wanted if s not in client.scopes]
    if unknown:
        raise InvalidScope(f"this client was not given the scope(s) {' '.join(unknown)}")
    return list(dict.fromkeys(wanted))


def _authenticate(
    runtime: Runtime, request: Request, form: FormData, grant: str
) -> tuple[OAuthClient, bool]:
    client_id, secret, basic = _client_credentials_of(request, form)
    source = request.client.host if request.client else None
    limiter = runtime.attempt_limiter
    limited = "too many failed attempts; try again later"
    # Generated secrets are 256-bit keys: verified first, only refusals counted. Secrets
    # an operator configured may be guessable: limited first, per client and source.
    if not any(c.configured for c in runtime.clients.candidates(client_id)):
        try:
            return runtime.clients.authenticate(client_id, secret, grant), basic
        except InvalidClient:
            if limiter.refused(refusal_keys(source)) is not None:
                raise InvalidClient(limited) from None
            raise
    try:
        with limiter.attempt(guessable_keys(f"client:{client_id[:200]}", source)) as attempt:
            try:
                return runtime.clients.authenticate(client_id, secret, grant), basic
            except InvalidClient:
                attempt.failed()
                raise
    except TooManyAttempts:
        raise InvalidClient(limited) from None


def _client_credentials_grant(
    runtime: Runtime, client: OAuthClient, form: FormData
) -> dict[str, Any]:
    scope = _scopes(_single(form, "scope"), client)
    token, expires_in = runtime.tokens.issue(
        subject=client.client_id,
        client_id=client.client_id,
        audience=client.audience,
        scope=scope,
        owner=client.org_id,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": " ".join(scope),
    }


def _authorization_code_grant(
    runtime: Runtime, client: OAuthClient, form: FormData
) -> dict[str, Any]:
    code, verifier = _single(form, "code"), _single(form, "code_verifier")
    redirect_uri = _single(form, "redirect_uri")
    if code is None or verifier is None or redirect_uri is None:
        raise OAuthInvalidRequest("code, redirect_uri and code_verifier are required")
    return _token_answer(runtime.app.sign_ins.exchange_code(client, code, verifier, redirect_uri))


def _token_answer(token: UserToken) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": token.scope,
    }
    if token.id_token is not None:
        answer["id_token"] = token.id_token
    return answer


_POLL_MESSAGES = {
    PollAnswer.PENDING: "the user has not approved the code yet",
    PollAnswer.SLOW_DOWN: "polling too fast: wait the interval, 5 seconds longer from now on",
    PollAnswer.EXPIRED: "the device code expired before it was approved; ask for a new one",
    PollAnswer.DENIED: "the user denied the sign-in",
}


def _device_code_grant(runtime: Runtime, client: OAuthClient, form: FormData) -> dict[str, Any]:
    device_code = _single(form, "device_code")
    if device_code is None:
        raise OAuthInvalidRequest("device_code is required")
    answer, token = runtime.app.device_logins.poll(client, device_code)
    if answer is PollAnswer.UNKNOWN:
        raise InvalidGrant("the device code is unknown, used, or for another client")
    if token is None:
        raise DevicePollError(answer.value, _POLL_MESSAGES[answer])
    return _token_answer(token)


async def _form(request: Request) -> FormData:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise OAuthInvalidRequest("send application/x-www-form-urlencoded")
    return await request.form()


@router.post(
    "/oauth/token",
    summary="OAuth 2.0 token endpoint (client credentials, code+PKCE, device code)",
)
async def token(request: Request, runtime: RuntimeDep) -> JSONResponse:
    basic = request.headers.get("authorization", "").lower().startswith("basic")
    try:
        form = await _form(request)
        grant = _single(form, "grant_type")
        if grant is None:
            raise OAuthInvalidRequest("grant_type is required")
        if grant not in (CLIENT_CREDENTIALS, AUTHORIZATION_CODE, DEVICE_CODE):
            raise UnsupportedGrantType(f"grant_type {grant[:60]!r} is not supported")
        answer, basic = await run_blocking(runtime, _grant, runtime, request, form, grant)
    except OAuthError as exc:
        return _oauth_error(exc, basic=basic)
    return JSONResponse(answer, headers=_NO_STORE)


def _grant(
    runtime: Runtime, request: Request, form: FormData, grant: str
) -> tuple[dict[str, Any], bool]:
    """The token answer of an authenticated client, and whether it used Basic (where
    :func:`~imprint.api.device_plane.run_blocking` puts the device plane's work: the
    client's lookup, its limiter and the signing key are store calls)."""
    client, basic = _authenticate(runtime, request, form, grant)
    if grant == CLIENT_CREDENTIALS:
        return _client_credentials_grant(runtime, client, form), basic
    if grant == DEVICE_CODE:
        return _device_code_grant(runtime, client, form), basic
    return _authorization_code_grant(runtime, client, form), basic


# --- device authorization (RFC 8628) ------------------------------------------------------


@router.post(
    "/oauth/device_authorization",
    summary="Device authorization (RFC 8628): a device code to poll with, a user code to approve",
)
async def device_authorization(request: Request, runtime: RuntimeDep) -> JSONResponse:
    basic = request.headers.get("authorization", "").lower().startswith("basic")
    try:
        form = await _form(request)
        issued, basic = await run_blocking(runtime, _start_device_login, runtime, request, form)
    except OAuthError as exc:
        return _oauth_error(exc, basic=basic)
    record = issued.record
    page = f"{runtime.settings.server.base_url()}/console/device"
    lifetime = int((record.expires_at - record.created_at).total_seconds())
    answer = {
        "device_code": issued.device_code,
        "user_code": issued.user_code,
        "verification_uri": page,
        "verification_uri_complete": f"{page}?{urlencode({'code': issued.user_code})}",
        "expires_in": lifetime,
        "interval": record.interval_seconds,
    }
    return JSONResponse(answer, headers=_NO_STORE)


def _start_device_login(
    runtime: Runtime, request: Request, form: FormData
) -> tuple[IssuedDeviceCode, bool]:
    client, basic = _authenticate(runtime, request, form, DEVICE_CODE)
    scope = _scopes(_single(form, "scope"), client)
    return runtime.app.device_logins.start(client, " ".join(scope)), basic


# --- authorization endpoint (login) -------------------------------------------------------


class _PageError(Exception):
    """An error shown on the page: the redirect URI cannot be trusted yet."""


def _authorize_client(runtime: Runtime, params: Mapping[str, str]) -> tuple[OAuthClient, str]:
    client_id = params.get("client_id", "")
    candidates = [
        c for c in runtime.clients.candidates(client_id) if AUTHORIZATION_CODE in c.grant_types
    ]
    if not client_id or not candidates:
        raise _PageError("Unknown client.")
    client = candidates[0]
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise _PageError("The redirect URI is not registered for this client.")
    return client, redirect_uri


def _redirect_error(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    query = {"error": error, "error_description": description}
    if state is not None:
        query["state"] = state
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(query)}", status_code=303)


def _check_request(params: Mapping[str, str], client: OAuthClient) -> tuple[str, str] | None:
    """(error, description) for a request that cannot be served, else None."""
    if params.get("response_type") != "code":
        return "unsupported_response_type", "response_type must be code"
    if params.get("code_challenge_method") != "S256" or not valid_challenge(
        params.get("code_challenge", "")
    ):
        return "invalid_request", "PKCE is required: code_challenge with method S256"
    unknown = [s for s in params.get("scope", "").split() if s not in client.scopes]
    if unknown:
        return "invalid_scope", f"this client was not given the scope(s) {' '.join(unknown)}"
    return None


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;"
        "padding:0 1rem}label,input,button{display:block;width:100%;margin:.4rem 0}"
        ".error{color:#b00020}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


def _login_form(
    params: Mapping[str, str], client: OAuthClient, message: str | None, status: int
) -> HTMLResponse:
    hidden = "".join(
        f'<input type=hidden name={name} value="{html.escape(params[name])}">'
        for name in _AUTHORIZE_FIELDS
        if params.get(name) is not None
    )
    error = f"<p class=error role=alert>{html.escape(message)}</p>" if message else ""
    body = (
        f"<p>Sign in to continue to <strong>{html.escape(client.name)}</strong>.</p>{error}"
        "<form method=post action='/oauth/authorize'>"
        f"{hidden}"
        "<label>User name <input name=username autocomplete=username required></label>"
        "<label>Password <input name=password type=password "
        "autocomplete=current-password required></label>"
        "<button type=submit>Sign in</button></form>"
    )
    return _page("imprint sign-in", body, status)


def _params(source: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: value
        for name in _AUTHORIZE_FIELDS
        if isinstance(value := source.get(name), str) and len(value) <= 2000
    }


@router.get("/oauth/authorize", summary="Sign-in page (authorization code with PKCE)")
def authorize_page(request: Request, runtime: RuntimeDep) -> Response:
    params = _params(request.query_params)
    try:
        client, redirect_uri = _authorize_client(runtime, params)
    except _PageError as exc:
        return _page("Sign-in request refused", f"<p class=error>{html.escape(str(exc))}</p>", 400)
    problem = _check_request(params, client)
    if problem is not None:
        return _redirect_error(redirect_uri, *problem, params.get("state"))
    return _login_form({**params, "redirect_uri": redirect_uri}, client, None, 200)


@router.post("/oauth/authorize", summary="Check the user's password and redirect with a code")
async def authorize_login(request: Request, runtime: RuntimeDep) -> Response:
    form = await request.form()
    # A password hash takes tens of milliseconds: in the thread pool, off the event loop.
    return await run_in_threadpool(_authorize_login, runtime, request, form)


def _authorize_login(runtime: Runtime, request: Request, form: FormData) -> Response:
    params = _params(form)
    try:
        client, redirect_uri = _authorize_client(runtime, params)
    except _PageError as exc:
        return _page("Sign-in request refused", f"<p class=error>{html.escape(str(exc))}</p>", 400)
    problem = _check_request(params, client)
    if problem is not None:
        return _redirect_error(redirect_uri, *problem, params.get("state"))
    params["redirect_uri"] = redirect_uri
    username = str(form.get("username") or "")
    password = str(form.get("password") or "")
    source = request.client.host if request.client else None
    try:
        user = check_password(runtime, source, username, password, client_id=client.client_id)
    except TooManyAttempts:
        return _login_form(params, client, "Too many failed attempts; try again later.", 429)
    if user is None:
        return _login_form(params, client, "Wrong user name or password.", 401)
    code = runtime.app.sign_ins.authorize(
        user,
        client,
        redirect_uri=redirect_uri,
        scope=params.get("scope", ""),
        nonce=params.get("nonce"),
        code_challenge=params["code_challenge"],
        organization=params.get("organization"),
    )
    query = {"code": code, "iss": runtime.tokens.issuer}
    if params.get("state") is not None:
        query["state"] = params["state"]
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(query)}", status_code=303)
