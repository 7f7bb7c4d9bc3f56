"""Approving a device login (RFC 8628): ``imprint login --device`` shows a code and
this page's address; the person signs in here, types the code (or follows the link that
carries it), sees what asks for access and approves or denies it.

Both answers call ``runtime.app.device_logins.decide`` (audited as
``device_login.approve`` / ``device_login.deny``); the form carries the session's CSRF
token like every console form. A wrong code counts as a failed attempt against the
signed-in user, so codes cannot be guessed from here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.api.problems import status_of
from imprint.attestation.base import TooManyAttempts
from imprint.auth.device_codes import DeviceAuthorization, normalize_user_code
from imprint.console.pages import ConsoleRoute, ConsoleSessionDep, ConsoleUser, form_of, render
from imprint.console.pages import runtime as runtime_of
from imprint.errors import ImprintError, NotFound
from imprint.provisioning.ratelimit import guessable_keys
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)


def _shown(code: str) -> str:
    plain = normalize_user_code(code)[:16]
    return f"{plain[:4]}-{plain[4:]}" if len(plain) == 8 else plain


def _page(
    request: Request,
    *,
    code: str = "",
    pending: DeviceAuthorization | None = None,
    done: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "device_login.html",
        title="Sign in a device",
        active="/console/device",
        code=_shown(code) if code else "",
        pending=pending,
        client_name=None if pending is None else _client_name(request, pending.client_id),
        done=done,
        error=error,
        status=status,
    )


def _client_name(request: Request, client_id: str) -> str:
    try:
        return runtime_of(request).clients.get(client_id).name
    except NotFound:
        return client_id


def _lookup(request: Request, user: Principal, code: str, decide: bool | None) -> object:
    """The pending request of ``code`` (``decide`` None), or the decided one; a wrong
    code counts as a failed attempt of this user."""
    rt = runtime_of(request)
    source = request.client.host if request.client else None
    with rt.attempt_limiter.attempt(guessable_keys(f"user-code:{user.subject}", source)) as tried:
        try:
            if decide is None:
                return rt.app.device_logins.pending(user, code)
            return rt.app.device_logins.decide(user, code, approve=decide)
        except NotFound:
            tried.failed()
            raise


@router.get("/device")
async def device_page(request: Request, user: ConsoleUser, code: str = "") -> Response:
    if not code:
        return _page(request)
    try:
        pending = await run_in_threadpool(_lookup, request, user, code, None)
    except TooManyAttempts:
        return _page(request, code=code, error="Too many wrong codes; try again later.", status=429)
    except ImprintError as exc:
        return _page(request, code=code, error=exc.message, status=status_of(exc))
    assert isinstance(pending, DeviceAuthorization)
    return _page(request, code=code, pending=pending)


@router.post("/device")
async def decide(request: Request, session: ConsoleSessionDep) -> Response:
    form = await form_of(request)
    code = form.get("code", "")
    approve = form.get("decision") == "approve"
    try:
        await run_in_threadpool(_lookup, request, session.principal, code, approve)
    except TooManyAttempts:
        return _page(request, code=code, error="Too many wrong codes; try again later.", status=429)
    except ImprintError as exc:
        return _page(request, code=code, error=exc.message, status=status_of(exc))
    if approve:
        done = "Approved. The command line is signed in as you; you may close this page."
    else:
        done = "Denied. The command line was told so and is not signed in."
    return _page(request, done=done)
