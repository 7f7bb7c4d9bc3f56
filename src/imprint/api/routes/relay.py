"""The browser relay: a client posts its CSR, a signed-in user approves it in a browser.

* ``POST /api/v1/relay`` (no credentials): the client's CSR -> ``{state, approve_url,
  expires_in}``.
* ``GET /relay/{state}``: the approval page; it shows the requested subject and the key
  fingerprint so the user can compare them with what the client shows.
* ``POST /relay/{state}``: approve or deny (CSRF token bound to a ``__Host-`` cookie;
  signed in with a bearer token or with user name and password on the form). Approval
  signs the identity certificate for the user's owner.
* ``GET /api/v1/relay/{state}``: the client collects: 202 while pending, 200 with the
  chain once approved (once: the state is then gone), 403 when denied, 410 after the
  state's lifetime, 404 for an unknown state.

The page uses the console's layout; a console session counts as signed in.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
from collections.abc import Mapping
from datetime import datetime

from cryptography import x509
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imprint.api.identity import RuntimeDep, optional_principal
from imprint.api.problems import problem_response
from imprint.api.routes.identity_csr import CSR_BODY_SCHEMA, IdentityOut, read_csr
from imprint.app.sign_ins import check_password
from imprint.attestation.base import TooManyAttempts
from imprint.console.csrf import csrf_field
from imprint.console.pages import ENV as CONSOLE_TEMPLATES
from imprint.console.pages import HEADERS as CONSOLE_HEADERS
from imprint.console.pages import NAV
from imprint.console.session import load_session
from imprint.errors import ImprintError, NotFound
from imprint.identities.relay import (
    RelayDecided,
    RelayExpired,
    RelayRequest,
    RelayStatus,
    RelayUnknown,
    csrf_token,
)
from imprint.pki.keys import key_description
from imprint.provisioning.ratelimit import Space
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(tags=["client identities"])

CSRF_COOKIE = "__Host-imprint-csrf"
_COOKIE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_PAGE_HEADERS = {
    **CONSOLE_HEADERS,
    "Content-Security-Policy": (  # the console's files only; no fetches from the page
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the state is in the URL
}


class RelayStarted(BaseModel):
    state: str = Field(description="Secret of this request: collect the certificate with it")
    approve_url: str = Field(description="Open in a browser where the user can sign in")
    collect_url: str
    expires_in: int = Field(description="Seconds until the state expires")
    expires_at: datetime
    public_key_sha256: str = Field(description="SHA-256 of the CSR's public key (SPKI DER)")
    fingerprint: str = Field(description="The same, as the approval page shows it")


class RelayPending(BaseModel):
    status: str = "pending"
    expires_in: int


class RelayCollected(IdentityOut):
    status: str = "approved"


# --- the client's side --------------------------------------------------------------------


@router.post(
    "/api/v1/relay",
    status_code=201,
    summary="Start a browser relay: post a CSR, get a state and the approval URL",
    response_model=RelayStarted,
    openapi_extra=CSR_BODY_SCHEMA,
)
async def start(request: Request, runtime: RuntimeDep) -> JSONResponse:
    source = request.client.host if request.client else None
    with runtime.identities.relay_limiter.attempt([(Space.RELAY, source or "-")]) as attempt:
        csr, _ = await read_csr(request)
        attempt.failed()  # every request started counts against its source
    started = await run_in_threadpool(_start, runtime, csr, source)
    return JSONResponse(
        started.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"}
    )


def _start(
    runtime: Runtime, csr: x509.CertificateSigningRequest, source: str | None
) -> RelayStarted:
    state, relay = runtime.app.relays.start(csr, source)
    base = runtime.settings.server.base_url()
    return RelayStarted(
        state=state,
        approve_url=f"{base}/relay/{state}",
        collect_url=f"{base}/api/v1/relay/{state}",
        expires_in=int(runtime.identities.relay_lifetime.total_seconds()),
        expires_at=relay.expires_at,
        public_key_sha256=relay.spki_sha256,
        fingerprint=relay.fingerprint,
    )


def _gone(exc: RelayExpired) -> JSONResponse:
    return problem_response(410, exc.code, exc.message, title="Gone")


@router.get(
    "/api/v1/relay/{state}",
    summary="Collect the certificate: 202 pending, 200 approved (once), 410 expired",
    response_model=RelayCollected,
    responses={202: {"model": RelayPending}},
)
def collect(state: str, runtime: RuntimeDep) -> JSONResponse:
    try:
        collected = runtime.app.relays.collect(state)
    except RelayExpired as exc:
        return _gone(exc)
    if collected.status is RelayStatus.PENDING:
        return JSONResponse(
            RelayPending(expires_in=collected.seconds_left).model_dump(),
            status_code=202,
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )
    if collected.identity is None:
        return problem_response(403, "relay_denied", "the user denied this request")
    body = RelayCollected(**IdentityOut.of(collected.identity).model_dump())
    return JSONResponse(body.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


# --- the user's side: the approval page ---------------------------------------------------


def _page(title: str, body: str, status: int = 200, request: Request | None = None) -> HTMLResponse:
    """The page in the console's layout (with its nav when a console session is open)."""
    session = load_session(request.app.state.runtime, request) if request is not None else None
    document = CONSOLE_TEMPLATES.get_template("relay.html").render(
        title=title,
        body=Markup(body),  # noqa: S704 (built from html.escape'd parts above)
        user=session.principal if session else None,
        nav=NAV,
        active="",
        flash=None,
        csrf_field=lambda: csrf_field(session.csrf if session else ""),
    )
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


def _message(title: str, text: str, status: int) -> HTMLResponse:
    return _page(title, f"<p class='banner error' role=alert>{html.escape(text)}</p>", status)


def _refusal(exc: ImprintError) -> HTMLResponse:
    if isinstance(exc, RelayExpired):
        return _message("Request expired", exc.message, 410)
    if isinstance(exc, RelayDecided):
        return _message("Request already decided", exc.message, 409)
    return _message("Request not found", exc.message, 404)


def _form(
    state: str,
    relay: RelayRequest,
    left: int,
    csrf: str,
    principal: Principal | None,
    message: str | None = None,
) -> str:
    error = f"<p class='banner error' role=alert>{html.escape(message)}</p>" if message else ""
    sign_in = (
        f"<p>Signed in as <strong>{html.escape(principal.name)}</strong>.</p>"
        if principal is not None
        else "<label>User name <input name=username autocomplete=username required></label>"
        "<label>Password <input name=password type=password "
        "autocomplete=current-password required></label>"
        "<label>Organization (optional) <input name=organization></label>"
    )
    key = key_description(relay.csr().public_key())
    return (
        "<p>A client application asks for an identity certificate of your organization. "
        "Approve only if the fingerprint matches the one the application shows.</p>"
        f"{error}<table class=kv id=relay-request>"
        f"<tr><th>Requested subject</th><td><code>{html.escape(relay.subject or '-')}"
        f"</code></td></tr><tr><th>Key</th><td id=key-type>{html.escape(key)}</td></tr>"
        "<tr><th>Public key fingerprint (SHA-256)</th>"
        f"<td><code id=fingerprint class=wrap>{html.escape(relay.fingerprint)}</code></td></tr>"
        f"<tr><th>Expires in</th><td>{left} s</td></tr></table>"
        f"<form method=post action='/relay/{html.escape(state)}' class=stack>"
        f'<input type=hidden name=csrf value="{html.escape(csrf)}">{sign_in}'
        "<div class=actions><button type=submit name=decision value=approve class=primary>"
        "Approve</button><button type=submit name=decision value=deny class=danger>Deny</button>"
        "</div></form>"
        "<p class=muted>The certificate names your organization, not the subject above.</p>"
    )


def _signed_in(request: Request) -> Principal | None:
    """The caller's bearer token, else her console session."""
    principal = optional_principal(request)
    if principal is None:
        session = load_session(request.app.state.runtime, request)
        principal = session.principal if session is not None else None
    return principal


def _csrf_cookie(request: Request) -> str | None:
    value = request.cookies.get(CSRF_COOKIE)
    return value if value is not None and _COOKIE.fullmatch(value) else None


@router.get(
    "/relay/{state}", summary="The approval page of a relay request", response_class=HTMLResponse
)
def approval_page(state: str, request: Request, runtime: RuntimeDep) -> Response:
    relays = runtime.app.relays
    try:
        relay = relays.pending(state)
    except (RelayUnknown, RelayExpired, RelayDecided) as exc:
        return _refusal(exc)
    principal = _signed_in(request)
    cookie = _csrf_cookie(request) or secrets.token_urlsafe(32)
    page = _page(
        "Approve a client identity",
        _form(state, relay, relays.seconds_left(relay), csrf_token(cookie, state), principal),
        request=request,
    )
    page.set_cookie(CSRF_COOKIE, cookie, path="/", secure=True, httponly=True, samesite="strict")
    return page


def _password_principal(
    runtime: Runtime, request: Request, form: Mapping[str, str]
) -> Principal | None:
    """The user of the form's user name and password; None when they do not match."""
    source = request.client.host if request.client else None
    user = check_password(
        runtime, source, form.get("username", ""), form.get("password", ""), via="relay"
    )
    if user is None:
        return None
    roles = dict(user.memberships or {})
    wanted = form.get("organization", "").strip()
    owner = wanted if wanted in roles else (sorted(roles)[0] if roles else None)
    return Principal(
        kind="user", subject=user.id, name=user.username, memberships=roles, owner=owner
    )


@router.post(
    "/relay/{state}", summary="Approve or deny a relay request", response_class=HTMLResponse
)
async def decide(state: str, request: Request, runtime: RuntimeDep) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 2000}
    cookie = _csrf_cookie(request)
    expected = csrf_token(cookie, state) if cookie is not None else None
    if expected is None or not hmac.compare_digest(
        expected.encode(), fields.get("csrf", "").encode()
    ):
        return _message(
            "Form refused",
            "The form is stale or did not come from this page: open the approval link again.",
            403,
        )
    return await run_in_threadpool(_decide, state, request, runtime, fields)


def _decide(state: str, request: Request, runtime: Runtime, fields: Mapping[str, str]) -> Response:
    relays = runtime.app.relays
    try:
        relay = relays.pending(state)
    except (RelayUnknown, RelayExpired, RelayDecided) as exc:
        return _refusal(exc)
    csrf = fields["csrf"]

    def again(message: str, status: int, principal: Principal | None = None) -> Response:
        form = _form(state, relay, relays.seconds_left(relay), csrf, principal, message)
        return _page("Approve a client identity", form, status)

    principal = _signed_in(request)
    if principal is None:
        try:
            principal = _password_principal(runtime, request, fields)
        except TooManyAttempts:
            return again("Too many failed attempts; try again later.", 429)
        if principal is None:
            return again("Wrong user name or password.", 401)
    decision = fields.get("decision")
    if decision not in ("approve", "deny"):
        return again("Choose Approve or Deny.", 400, principal)
    try:
        if decision == "deny":
            relays.deny(principal, state)
            return _page("Request denied", "<p>The application will not get a certificate.</p>")
        identity = relays.approve(principal, state)
    except RelayDecided:
        return _message("Request not pending", "The request expired or was decided meanwhile.", 409)
    except (RelayUnknown, RelayExpired) as exc:
        return _refusal(exc)
    except NotFound:
        return _message("Not allowed", "You cannot sign for that organization.", 404)
    except ImprintError as exc:
        status = 409 if exc.code == "identity_key_conflict" else 403
        return _message("Not approved", exc.message, status)
    return _page(
        "Approved",
        request=request,
        body=f"<p>The certificate for <strong>{html.escape(identity.owner)}</strong> is ready; "
        "return to the application.</p>",
    )
