"""Which route answers a request. The application matches the routers in the order
``create_app`` includes them, device plane first (a performance choice: see
``bench/README.md``, "Route order"); that order may only ever change speed, never the
route chosen, so no request may be answered by two of the routers it includes."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Match

from imprint.api.app import create_app
from tests.integration.conftest import Service

DEVICE_PLANE = (
    ("POST", "/api/v1/provision"),
    ("POST", "/api/v1/certificates"),
    ("POST", "/.well-known/est/sample/simpleenroll"),
    ("GET", "/ocsp/sample"),
    ("POST", "/update"),
)
ADMIN_AND_CONSOLE = (
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/enrollments"),
    ("GET", "/console/devices"),
)


def _answering(app: FastAPI, method: str, path: str) -> list[int]:
    """The positions of the application's routers (and routes of its own) that take a
    request, in the order they are asked."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return [index for index, entry in enumerate(app.router.routes) if _full(entry, dict(scope))]


def _full(entry: BaseRoute, scope: dict[str, object]) -> bool:
    return entry.matches(scope)[0] == Match.FULL


def test_no_request_is_answered_by_two_routers(service: Service) -> None:
    app = create_app(service.runtime)
    requests = {
        (method, re.sub(r"\{[^}]+\}", "x", str(context.path_format)))
        for context in iter_route_contexts(app.routes)
        for method in context.methods or ()
    }
    assert len(requests) > 150, "the application's routes were not all found"
    unanswered = [r for r in sorted(requests) if not _answering(app, *r)]
    assert not unanswered, f"samples no router takes: {unanswered}"
    shared = {r: _answering(app, *r) for r in requests if len(_answering(app, *r)) > 1}
    assert not shared, f"requests two routers take: {shared}"


def test_the_device_plane_is_asked_before_the_admin_api_and_the_console(
    service: Service,
) -> None:
    app = create_app(service.runtime)
    first_admin = min(min(_answering(app, *request)) for request in ADMIN_AND_CONSOLE)
    for request in DEVICE_PLANE:
        [position] = _answering(app, *request)
        assert position < first_admin, f"{request} is matched after the admin API"
