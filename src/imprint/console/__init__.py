"""The web console at ``/console``: server-rendered pages over the same stores and
rules as the admin API. See README.md in this package for how to add a page."""

from __future__ import annotations

from fastapi import APIRouter, Response

from imprint.console import (
    account,
    audit,
    auth,
    bulk,
    certificates,
    channels,
    dashboard,
    device_login,
    devices,
    enrollments,
    oidc,
    orgs,
    trusted_cas,
    webhooks,
)
from imprint.console.pages import ConsoleRoute, static_file

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)


@router.get("/static/{name:path}")
def static(name: str) -> Response:
    found = static_file(name)
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body, media_type = found
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


for _module in (
    auth,
    oidc,
    account,
    dashboard,
    bulk,
    devices,
    certificates,
    audit,
    orgs,
    trusted_cas,
    enrollments,
    channels,
    webhooks,
    device_login,
):
    router.include_router(_module.router)
