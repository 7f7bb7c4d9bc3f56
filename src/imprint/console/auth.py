"""Sign in and sign out."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.auditing import audit
from imprint.console import oidc
from imprint.console.csrf import check_login_csrf, login_token, set_login_cookie
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleSessionDep,
    flash,
    form_of,
    redirect,
    render,
    runtime,
)
from imprint.console.session import (
    LoginFailed,
    clear_session,
    end_session,
    load_session,
    password_login,
    start_session,
)

router = APIRouter(route_class=ConsoleRoute)


def _next(value: str | None) -> str:
    if value and value.startswith("/console") and not value.startswith("//"):
        return value[:500]
    return "/console/"


def _issuer(request: Request) -> str | None:
    rt = runtime(request)
    if not oidc.enabled(rt):
        return None
    return urlsplit(rt.settings.auth.oidc.issuer or "").netloc or None


def _login_page(
    request: Request, target: str, message: str | None = None, status: int = 200, username: str = ""
) -> Response:
    cookie, token = login_token(request)
    page = render(
        request,
        "login.html",
        status=status,
        title="Sign in",
        next=target,
        error=message,
        username=username,
        csrf_token=token,
        oidc_issuer=_issuer(request),
    )
    set_login_cookie(page, cookie)
    return page


@router.get("/login")
def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    if load_session(runtime(request), request) is not None:
        return redirect(_next(next))
    return _login_page(request, _next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 2000}
    target = _next(fields.get("next"))
    check_login_csrf(request, form.get("csrf"))
    username = fields.get("username", "")
    try:
        user_id, owner = await run_in_threadpool(
            password_login, runtime(request), request, username, fields.get("password", "")
        )
    except LoginFailed as exc:
        return _login_page(request, target, exc.message, exc.status, username[:200])
    response = redirect(target)
    start_session(runtime(request), response, user_id, owner)
    return response


@router.post("/logout")
async def logout(request: Request, session: ConsoleSessionDep) -> Response:
    await form_of(request)
    rt = runtime(request)
    await run_in_threadpool(end_session, rt, session)
    await run_in_threadpool(
        audit,
        rt,
        session.principal,
        "user.logout",
        "user",
        session.user_id,
        org_id=session.owner,
        via="console",
    )
    response = redirect("/console/login")
    clear_session(response)
    flash(request, response, "You are signed out.", "info")
    return response
