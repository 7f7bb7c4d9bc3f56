"""Device routes served as raw ASGI, declared as FastAPI routes (bench/README.md, step 16).

A registration spends about a tenth of its CPU in FastAPI's request handling: the
dependency solver, the body read as JSON and then validated as a dict, the response
model validated again and dumped to a dict that ``json.dumps`` encodes. A
:class:`DeviceRoute` keeps the route's FastAPI declaration (matching, OpenAPI, the
405's ``Allow``) and serves it directly:

- the endpoint's dependencies (each ``Annotated[T, Depends(f)]`` with ``f`` an
  ``async`` function of the request alone, such as the caller's authentication) are
  awaited first: a caller without credentials learns nothing of the body, not even
  whether it is JSON;
- the body is then validated straight from its bytes by the model's own JSON
  validator, and the endpoint is called as ``endpoint(body, request, **dependencies)``;
  it returns its :class:`~starlette.responses.Response`, built with the response
  model's JSON serializer (:func:`json_response`);
- a bad body raises :class:`~fastapi.exceptions.RequestValidationError`, and the
  errors of the dependencies and the endpoint propagate, so the application's problem
  handlers answer them as for every other route.

The endpoint's first two parameters are ``body`` (a pydantic model) and ``request``;
a route whose endpoint does not fit is refused when it is declared. Dependencies
declared anywhere else would not run: those of the route and its router are refused
when it is declared, and :func:`check_device_routes` finds those an
``include_router`` would add (``create_app`` includes no router, so on its application
the check holds by construction; a test shows it refusing an included router's).
``app.dependency_overrides`` does not reach these routes.

:func:`serve_device_routes_first` then hands a request for one of them (its method and
exact path) to it straight from the application's router, before FastAPI's matching
walks its routers (about 40 µs a request: bench/README.md, step 40).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter, iter_route_contexts
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "DeviceRoute",
    "check_device_routes",
    "json_response",
    "parse_body",
    "serve_device_routes_first",
]

Endpoint = Callable[..., Awaitable[Response]]
Dependency = Callable[[Request], Awaitable[Any]]


class DeviceRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose requests skip FastAPI's handler."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.dependencies:
            raise TypeError(f"{path}: a device route's dependencies are its endpoint's parameters")
        hints = typing.get_type_hints(endpoint, include_extras=True)
        names = list(inspect.signature(endpoint).parameters)
        if names[:2] != ["body", "request"] or hints["request"] is not Request:
            raise TypeError(f"{path}: a device route's endpoint takes (body, request, ...)")
        self._body_model: type[BaseModel] = hints["body"]
        self._endpoint: Endpoint = endpoint
        self._dependencies = [(name, _dependency(path, hints[name])) for name in names[2:]]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            await super().handle(scope, receive, send)  # FastAPI's 405
            return
        request = Request(scope, receive, send)
        try:
            raw = await request.body()
        except ClientDisconnect:  # gone before its body arrived: as FastAPI answers it
            raise HTTPException(400, "There was an error parsing the body") from None
        resolved = {name: await dependency(request) for name, dependency in self._dependencies}
        body = parse_body(self._body_model, raw, _content_type(scope))
        response = await self._endpoint(body, request, **resolved)
        await response(scope, receive, send)


def _dependency(path: str, hint: Any) -> Dependency:
    """The ``async`` function of the request that ``Annotated[T, Depends(f)]`` names."""
    marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, params.Depends)]
    function = marks[0].dependency if len(marks) == 1 else None
    if function is None or not inspect.iscoroutinefunction(function) or not _of_request(function):
        raise TypeError(f"{path}: a device route's dependency is an async function of the request")
    dependency: Dependency = function
    return dependency


def _of_request(function: Callable[..., Any]) -> bool:
    """Whether ``function(request)`` is a whole call: every other parameter has a default."""
    parameters = list(inspect.signature(function).parameters.values())
    return bool(parameters) and all(p.default is not p.empty for p in parameters[1:])


def check_device_routes(app: FastAPI) -> None:
    """Refuse dependencies a :class:`DeviceRoute` would not run: those of the routers
    that include it (the route's own are refused when it is declared).

    Raises:
        TypeError: a device route has such dependencies.
    """
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, DeviceRoute) and context.dependencies:
            raise TypeError(
                f"{context.path}: a device route's dependencies are its endpoint's parameters"
            )


def serve_device_routes_first(app: FastAPI, *routers: APIRouter) -> None:
    """Answer the requests of the device routes of ``routers`` (served by ``app`` as
    they were declared, ``imprint.api.app.ROUTERS``) without FastAPI's route matching.

    FastAPI finds a route by asking each in turn, with scope bookkeeping (about 40 µs
    for the first route when the application included its routers: bench/README.md,
    step 40; less since it serves their routes themselves, step 44).
    A device route has a fixed path, so its requests are known by method and path. The
    dispatcher sits where the router's matching starts, inside every middleware and
    exception handler, and sets what the route and the request log read of a match
    (``route``, ``endpoint``, ``path_params``, ``router``; not FastAPI's own
    bookkeeping, which a device route does not use). Any other request, a device
    route's path with another method (405) or another spelling (a trailing slash)
    included, is matched as before. No two routers answer one request
    (``tests/integration/test_routing.py``), so the route chosen is the one FastAPI
    would choose. The routes are read from their routers;
    `tests/integration/test_device_routes.py` checks they are the application's.
    """
    routes: dict[tuple[str, str], DeviceRoute] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, DeviceRoute) and not route.param_convertors:
                for method in route.methods or ():
                    routes.setdefault((method, route.path), route)  # FastAPI takes the first
    app.router.middleware_stack = _DeviceDispatch(app.router.middleware_stack, app.router, routes)


class _DeviceDispatch:
    """The router's entry point, device routes first (:func:`serve_device_routes_first`)."""

    def __init__(
        self, router_app: ASGIApp, router: object, routes: dict[tuple[str, str], DeviceRoute]
    ) -> None:
        self._router_app = router_app
        self._router = router
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self._routes.get((scope["method"], scope["path"]))
            if route is not None:
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                scope.setdefault("router", self._router)
                await route.handle(scope, receive, send)
                return
        await self._router_app(scope, receive, send)


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value)
    return None


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/*+json``, as FastAPI reads a JSON body."""
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    main, _, sub = media.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


M = typing.TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes, content_type: bytes | None) -> M:
    """``body`` validated as ``model``, or :class:`RequestValidationError` naming where.

    As FastAPI does for a JSON body: an empty body is missing, and a body that is not
    declared as JSON is not an object. The errors never carry the rejected input.
    """
    if not body:
        raise RequestValidationError([_error("missing", (), "Field required")])
    if not _is_json(content_type):
        raise RequestValidationError(
            [_error("model_attributes_type", (), "Input should be a JSON object")]
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as invalid:
        if invalid.errors()[0]["type"] != "json_invalid":
            raise _invalid(invalid) from None
    # What pydantic's JSON parser refuses and Python's reads (a byte-order mark, UTF-16,
    # nesting deeper than 200): read as FastAPI read it, then validated.
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise RequestValidationError([_error("json_invalid", (), "JSON decode error")]) from None
    try:
        return model.model_validate(document)
    except ValidationError as invalid:
        raise _invalid(invalid) from None


def _invalid(invalid: ValidationError) -> RequestValidationError:
    errors = invalid.errors(include_url=False, include_input=False, include_context=False)
    return RequestValidationError([_error(e["type"], e["loc"], e["msg"]) for e in errors])


def _error(kind: str, loc: Sequence[int | str], message: str) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", *loc), "msg": message}


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``model`` as a JSON response, serialized once by pydantic's own serializer."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")
