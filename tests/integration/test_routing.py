"""Which route answers a request. The application matches the routes of its routers in
the order of ``imprint.api.app.ROUTERS``, device plane first (a performance choice:
see ``bench/README.md``, step 6); that order may only ever change speed, never the
route chosen, so no request may be answered by two of the routers it serves."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, Match

from imprint.api.app import ROUTERS, create_app
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


def _groups(app: FastAPI) -> list[list[BaseRoute]]:
    """The application's routes, grouped by the router that declared them, in the order
    they are asked (a route of FastAPI's own, such as ``/docs``, a group of its own)."""
    router_of = {
        id(route): index for index, router in enumerate(ROUTERS) for route in router.routes
    }
    groups: list[list[BaseRoute]] = []
    last: int | None = None
    for route in app.router.routes:
        index = router_of.get(id(route))
        if index is None or index != last:
            groups.append([])
        groups[-1].append(route)
        last = index
    return groups


def _answering(app: FastAPI, method: str, path: str) -> list[int]:
    """The positions of the groups of :func:`_groups` that take a request."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return [
        index
        for index, group in enumerate(_groups(app))
        if any(_full(route, dict(scope)) for route in group)
    ]


def test_the_application_serves_its_routers_routes_in_their_order(service: Service) -> None:
    """Each router's routes, as their module declared them, after FastAPI's own. What
    only ``include_router`` passes on to the application would be lost, so no router
    has any of it: start-up or shutdown handlers, form limits, low-priority (frontend)
    routes, a body limit for routes other than its API routes. (A lifespan would not
    run either way: the server runs the application without one.)"""
    app = create_app(service.runtime)
    served = [id(route) for route in app.router.routes]
    declared = [id(route) for router in ROUTERS for route in router.routes]
    assert served[-len(declared) :] == declared
    assert len(_groups(app)) == len(served) - len(declared) + len(ROUTERS)
    for router in ROUTERS:
        assert not router.on_startup
        assert not router.on_shutdown
        assert not router.form_limits
        assert not router._low_priority_routes
        if router.max_body_size is not None:
            assert all(isinstance(route, APIRoute) for route in router.routes)


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
    taken = {r: _answering(app, *r) for r in requests}
    unanswered = sorted(r for r, routers in taken.items() if not routers)
    assert not unanswered, f"samples no router takes: {unanswered}"
    shared = {r: routers for r, routers in taken.items() if len(routers) > 1}
    assert not shared, f"requests two routers take: {shared}"


def _may_overlap(a: str, b: str) -> bool:
    """Whether some path could match both route patterns, segment by segment: a
    segment holding a parameter may be anything (a ``:path`` one, any rest of the path),
    so this errs towards "yes"."""
    left, right = a.strip("/").split("/"), b.strip("/").split("/")
    for x, y in zip(left, right, strict=False):
        if ":path}" in x or ":path}" in y:
            return True
        if "{" not in x and "{" not in y and x != y:
            return False
    return len(left) == len(right)


def test_no_two_routers_have_routes_a_path_could_match_both(service: Service) -> None:
    """The check above with samples, made for every path: a parameter of one route may
    stand where another has a literal (``/a/{p}/c`` and ``/a/b/{q}``)."""
    app = create_app(service.runtime)
    routes = [
        (index, method, str(context.path_format))
        for index, group in enumerate(_groups(app))
        for context in iter_route_contexts(group)
        for method in context.methods or ()
    ]
    assert len(routes) > 150, "the application's routes were not all found"
    crossing = sorted(
        {
            (method, a, b)
            for i, method, a in routes
            for j, other_method, b in routes
            if i < j and method == other_method and _may_overlap(a, b)
        }
    )
    assert not crossing, f"routes of two routers a request could match: {crossing}"
    assert _may_overlap("/a/{p}/c", "/a/b/{q}")
    assert not _may_overlap("/a/b", "/a/c")


def test_the_device_plane_is_asked_before_the_admin_api_and_the_console(
    service: Service,
) -> None:
    app = create_app(service.runtime)
    first_admin = min(min(_answering(app, *request)) for request in ADMIN_AND_CONSOLE)
    for request in DEVICE_PLANE:
        [position] = _answering(app, *request)
        assert position < first_admin, f"{request} is matched after the admin API"


def test_fastapis_own_telemetry_is_off(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI's OpenTelemetry hooks would ask the global providers and the environment
    on every request whether they are configured; imprint's request log and metrics are
    its own, so the hooks are off even where the environment would turn them on."""
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    app = create_app(service.runtime)
    telemetry = app._native_telemetry
    assert not telemetry.enabled()
    assert (telemetry.config["tracing"], telemetry.config["metrics"], telemetry.config["logs"]) == (
        False,
        False,
        False,
    )
