"""Your account: who you are, your memberships, and changing your password.

Changing the password calls the same operation as the admin API
(``runtime.app.users.change_own_password``: the same check of the current password,
the same failure limiter and audit entry). The sessions and tokens
issued before the change end; this browser gets a fresh session and stays signed in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.api.problems import status_of
from imprint.attestation.base import TooManyAttempts
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleSessionDep,
    ConsoleUser,
    flash,
    form_of,
    redirect,
    render,
)
from imprint.console.pages import runtime as runtime_of
from imprint.console.session import start_session
from imprint.errors import InvalidValue, PermissionDenied
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)


def _page(
    request: Request, user: Principal, error: str | None = None, status: int = 200
) -> Response:
    return render(
        request,
        "account.html",
        title="Your account",
        active="/console/account",
        local=user.kind == "user",
        memberships=sorted((org, role.value) for org, role in user.memberships.items()),
        error=error,
        status=status,
    )


@router.get("/account")
async def account_page(request: Request, user: ConsoleUser) -> Response:
    return _page(request, user)


@router.post("/account/password")
async def change_password(request: Request, session: ConsoleSessionDep) -> Response:
    form = await form_of(request)
    user = session.principal
    if form.get("new_password", "") != form.get("repeat_password", ""):
        return _page(request, user, "The two new passwords differ.", 400)
    rt = runtime_of(request)
    try:
        await run_in_threadpool(
            rt.app.users.change_own_password,
            user,
            form.get("current_password", ""),
            form.get("new_password", ""),
            source=request.client.host if request.client else None,
        )
    except (InvalidValue, PermissionDenied) as exc:
        return _page(request, user, exc.message, status_of(exc))
    except TooManyAttempts:
        return _page(request, user, "Too many failed attempts; try again later.", 429)
    response = redirect("/console/account")
    start_session(rt, response, session.user_id, session.owner)
    flash(request, response, "Password changed. Your other sessions have ended.")
    return response
