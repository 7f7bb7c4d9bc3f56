"""Trusted CAs: the client CAs of client-ca enrollments, decoded before they are saved.

Paste one or more PEM certificates and press **Decode**: the page shows each one's
subject, issuer, validity, key type and SHA-256 fingerprint, and stores nothing. **Save**
then trusts them for the chosen enrollment (the API's add, so a non-CA certificate is
refused). Each enrollment's list can be enabled or disabled (the enrollment itself), and
a CA removed from it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.console.pages import ConsoleRoute, ConsoleUser, flash, form_of, redirect, render
from imprint.console.pages import runtime as runtime_of
from imprint.errors import Conflict, ImprintError, InvalidRequest, InvalidValue
from imprint.provisioning.client_cas import DecodedCertificate, decode
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)

PAGE = "/console/trusted-cas"


#: The API's limit on a pasted PEM text.
MAX_PEM = 262144


def _lists(rt: Runtime, user: Principal) -> list[dict[str, object]]:
    return [
        {"enrollment": enrollment, "cas": cas}
        for enrollment, cas in rt.app.client_cas.by_enrollment(user)
    ]


def _page(
    request: Request,
    user: Principal,
    rt: Runtime,
    *,
    pem: str = "",
    chosen: str = "",
    decoded: list[DecodedCertificate] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "trusted_cas.html",
        status=status,
        title="Trusted CAs",
        active=PAGE,
        lists=_lists(rt, user),
        pem=pem,
        chosen=chosen,
        decoded=decoded,
        error=error,
    )


@router.get("/trusted-cas")
async def trusted_cas(
    request: Request,
    user: ConsoleUser,
    enrollment: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    rt = runtime_of(request)
    return await run_in_threadpool(
        lambda: _page(request, user, rt, chosen=enrollment or ""),
    )


@router.post("/trusted-cas")
async def decode_or_save(request: Request, user: ConsoleUser) -> Response:
    """``action=decode`` previews; ``action=save`` trusts the PEM for the enrollment."""
    form = await form_of(request)
    rt = runtime_of(request)
    pem = form.get("pem", "")
    chosen = form.get("enrollment", "").strip()
    if form.get("action") == "save":
        try:
            if len(pem) > MAX_PEM:
                raise InvalidValue(f"pem: at most {MAX_PEM} characters")
            saved = await run_in_threadpool(rt.app.client_cas.add, user, chosen, pem)
        except (InvalidRequest, Conflict) as exc:
            return _page(request, user, rt, pem=pem, chosen=chosen, error=exc.message, status=400)
        response = redirect(f"{PAGE}?enrollment={chosen}")
        flash(request, response, f"Saved: {chosen} now trusts {len(saved)} CA(s).")
        return response
    try:
        decoded = decode(pem)
    except ImprintError as exc:
        return _page(request, user, rt, pem=pem, chosen=chosen, error=exc.message, status=400)
    return _page(request, user, rt, pem=pem, chosen=chosen, decoded=decoded)


@router.post("/trusted-cas/{enrollment_id}/remove")
async def remove(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    fp = form.get("fingerprint", "")
    await run_in_threadpool(runtime_of(request).app.client_cas.remove, user, enrollment_id, fp)
    response = redirect(f"{PAGE}?enrollment={enrollment_id}")
    flash(request, response, f"{enrollment_id} no longer trusts {fp[:16]}…")
    return response


@router.post("/trusted-cas/{enrollment_id}/state")
async def set_state(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    rt = runtime_of(request)
    enable = form.get("enabled") == "true"
    action = rt.app.enrollments.enable if enable else rt.app.enrollments.disable
    await run_in_threadpool(action, user, enrollment_id)
    response = redirect(f"{PAGE}?enrollment={enrollment_id}")
    flash(request, response, f"{enrollment_id} is {'enabled' if enable else 'disabled'}.")
    return response
