"""The registration and renewal routes, served as raw ASGI (``DeviceRoute``), answer bad
requests exactly as every FastAPI route does: a 400 problem naming the fields, never the
input, and nothing journaled; a wrong method is 405 with ``Allow``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRouter, iter_route_contexts
from starlette.responses import Response

from imprint.api.app import create_app
from imprint.api.device_route import DeviceRoute, _DeviceDispatch, check_device_routes
from tests.integration.conftest import Service
from tests.integration.test_api import make_csr

PROBLEM = "application/problem+json"
SECRET = "s3cret-evidence-value"
CSR = "-----BEGIN CERTIFICATE REQUEST-----\nnot a request\n-----END CERTIFICATE REQUEST-----\n"
JSON = {"Content-Type": "application/json"}


def _valid() -> dict[str, Any]:
    return {"mechanism": "symmetric-key", "csr": CSR, "registration_id": "d1",
            "evidence": {"token": SECRET}}  # fmt: skip


BAD: list[tuple[str, bytes, dict[str, str], str]] = [
    ("empty body", b"", JSON, "body"),
    ("JSON sent as text", json.dumps(_valid()).encode(), {"Content-Type": "text/plain"}, "body"),
    ("no content type", json.dumps(_valid()).encode(), {}, "body"),
    ("not JSON", b'{"mechanism": "x509", "evidence": {"token": "' + SECRET.encode(), JSON, "body"),
    ("a list", json.dumps([_valid()]).encode(), JSON, "body"),
    ("csr not a string", json.dumps({**_valid(), "csr": 1}).encode(), JSON, "csr"),
    ("unknown field", json.dumps({**_valid(), "colour": SECRET}).encode(), JSON, "colour"),
    ("csr too long", json.dumps({**_valid(), "csr": "A" * 70000}).encode(), JSON, "csr"),
    ("unknown mechanism", json.dumps({**_valid(), "mechanism": SECRET}).encode(), JSON,
     "mechanism"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "headers", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_registration_is_a_400_naming_the_field_not_the_input(
    service: Service, case: str, body: bytes, headers: dict[str, str], field: str
) -> None:
    journal_before = _journal_size(service)
    with service.client() as client:
        answer = client.post("/api/v1/provision", content=body, headers=headers)
    assert answer.status_code == 400, (case, answer.text)
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["x-request-id"]
    problem = answer.json()
    assert problem["code"] == "request_invalid"
    assert field in [error["field"] or "body" for error in problem["errors"]], problem
    assert SECRET not in answer.text
    assert _journal_size(service) == journal_before


def test_a_bad_renewal_is_a_400_too(service: Service) -> None:
    with service.client() as client:
        missing = client.post("/api/v1/renew", json={"evidence": {}})
        extra = client.post("/api/v1/renew", json={"csr": CSR, "mechanism": "x509"})
    for answer, field in ((missing, "csr"), (extra, "mechanism")):
        assert (answer.status_code, answer.json()["code"]) == (400, "request_invalid")
        assert [e["field"] for e in answer.json()["errors"]] == [field]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/x+json"]
)
def test_every_json_media_type_is_read_as_json(service: Service, content_type: str) -> None:
    """The body is read; the refusal comes from the CSR, not from the media type."""
    with service.client() as client:
        answer = client.post(
            "/api/v1/provision",
            content=json.dumps(_valid()).encode(),
            headers={"Content-Type": content_type},
        )
    assert answer.status_code == 400
    assert answer.json()["code"] != "request_invalid", answer.text


def _nested(depth: int) -> dict[str, object]:
    document: dict[str, object] = {}
    for _ in range(depth):
        document = {"a": document}
    return document


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf" + json.dumps(_valid()).encode(),  # a UTF-8 byte-order mark
        json.dumps(_valid()).encode("utf-16"),
        json.dumps({**_valid(), "evidence": _nested(300)}).encode(),  # deeper than pydantic's
    ],
    ids=["BOM", "UTF-16", "deep"],
)
def test_json_python_reads_is_read(service: Service, body: bytes) -> None:
    with service.client() as client:
        answer = client.post("/api/v1/provision", content=body, headers=JSON)
    assert answer.status_code == 400
    assert answer.json()["code"] != "request_invalid", answer.text


def test_csr_signing_authenticates_before_it_reads_the_body(service: Service) -> None:
    with service.client() as client:
        anonymous = client.post("/api/v1/certificates", content=b"{not json", headers=JSON)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "authentication_required")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    with service.admin() as admin:
        bad = admin.post("/api/v1/certificates", content=b"{not json", headers=JSON)
        signed = admin.post("/api/v1/certificates", json={"csr": make_csr("routed")[0]})
    assert (bad.status_code, bad.json()["code"]) == (400, "request_invalid")
    assert bad.json()["errors"] == [{"field": "", "message": "JSON decode error"}]
    assert signed.status_code == 201, signed.text
    assert signed.headers["content-type"] == "application/json"
    issued = signed.json()
    assert issued["status"] == "issued"
    assert issued["chain"].startswith(issued["certificate"])


def test_the_three_routes_are_device_routes(service: Service) -> None:
    app = create_app(service.runtime)
    check_device_routes(app)  # no router adds dependencies they would not run
    served = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, DeviceRoute)
        for method in context.methods or ()
    }
    assert served == {
        ("POST", "/api/v1/provision"),
        ("POST", "/api/v1/renew"),
        ("POST", "/api/v1/certificates"),
    }
    # What the router hands them straight (serve_device_routes_first, which reads the
    # routers it is given): the same requests, each to its route.
    dispatch = app.router.middleware_stack
    assert isinstance(dispatch, _DeviceDispatch)
    assert set(dispatch._routes) == served
    for (method, path), route in dispatch._routes.items():
        assert path == route.path
        assert method in (route.methods or ())


def test_device_routes_are_served_before_fastapi_matches_routes(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device route's request goes to it by method and path, without FastAPI walking
    its routers; every other request, that path with another method included, is
    matched as before, and each is answered as FastAPI would answer it."""
    matched: list[str] = []
    fastapi_matching = APIRouter.app

    async def counted(router: APIRouter, scope: Any, receive: Any, send: Any) -> None:
        matched.append(f"{scope['method']} {scope['path']}")
        await fastapi_matching(router, scope, receive, send)

    monkeypatch.setattr(APIRouter, "app", counted)
    app = create_app(service.runtime)

    def ask(method: str, path: str) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 443), "state": {}, "extensions": {},
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }  # fmt: skip
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], scope

    status, scope = ask("POST", "/api/v1/certificates")
    assert status == 401  # the route's authentication, before the body
    assert isinstance(scope["route"], DeviceRoute)
    assert scope["route"].path == "/api/v1/certificates"  # what the request log names
    status, scope = ask("POST", "/api/v1/provision")
    assert status == 400
    assert scope["route"].path == "/api/v1/provision"
    assert matched == []
    assert ask("GET", "/api/v1/certificates")[0] == 401  # the admin list: matched
    assert ask("GET", "/api/v1/provision")[0] == 405
    assert ask("POST", "/api/v1/provision/")[0] in (307, 404)  # as FastAPI answers it
    assert matched == [
        "GET /api/v1/certificates",
        "GET /api/v1/provision",
        "POST /api/v1/provision/",
    ]


def test_a_client_gone_before_its_body_is_a_400_not_a_500(service: Service) -> None:
    app = create_app(service.runtime)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"mechanism":', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": "/api/v1/provision", "raw_path": b"/api/v1/provision",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 443), "state": {}, "extensions": {},
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400


def test_a_wrong_method_is_405_with_allow(service: Service) -> None:
    with service.client() as client:
        for path in ("/api/v1/provision", "/api/v1/renew"):
            answer = client.get(path)
            assert answer.status_code == 405
            assert answer.headers["allow"] == "POST"
            assert answer.headers["content-type"] == PROBLEM


def test_a_body_over_the_limit_is_413(service: Service) -> None:
    limit = service.runtime.settings.server.max_body_bytes
    with service.client() as client:
        answer = client.post("/api/v1/provision", content=b"{" + b" " * limit + b"}",
                             headers=JSON)  # fmt: skip
    assert (answer.status_code, answer.json()["code"]) == (413, "body_too_large")


async def _request_first(request: Request, body: dict[str, str]) -> Response:
    raise AssertionError("never called")


def _blocking(request: Request) -> int:
    return 1


async def _plain_parameter(body: dict[str, str], request: Request, extra: int) -> Response:
    raise AssertionError("never called")


async def _sync_dependency(
    body: dict[str, str], request: Request, extra: Annotated[int, Depends(_blocking)]
) -> Response:
    raise AssertionError("never called")


async def _needs_more(request: Request, other: int) -> int:
    return other


async def _dependency_with_more(
    body: dict[str, str], request: Request, extra: Annotated[int, Depends(_needs_more)]
) -> Response:
    raise AssertionError("never called")


async def _refuse() -> None:
    raise AssertionError("a guard that would not run")


async def _fine(body: dict[str, str], request: Request) -> Response:
    raise AssertionError("never called")


def test_a_device_route_refuses_an_endpoint_it_cannot_call() -> None:
    router = APIRouter(route_class=DeviceRoute)
    with pytest.raises(TypeError, match=r"takes \(body, request, \.\.\.\)"):
        router.post("/x")(_request_first)
    for endpoint in (_plain_parameter, _sync_dependency, _dependency_with_more):
        with pytest.raises(TypeError, match="an async function of the request"):
            router.post("/x")(endpoint)


def test_dependencies_a_device_route_would_not_run_are_refused() -> None:
    on_the_route = APIRouter(route_class=DeviceRoute)
    with pytest.raises(TypeError, match="its endpoint's parameters"):
        on_the_route.post("/x", dependencies=[Depends(_refuse)])(_fine)
    on_the_router = APIRouter(route_class=DeviceRoute, dependencies=[Depends(_refuse)])
    with pytest.raises(TypeError, match="its endpoint's parameters"):
        on_the_router.post("/x")(_fine)
    included = APIRouter(route_class=DeviceRoute)
    included.post("/x")(_fine)
    app = FastAPI()
    app.include_router(included, dependencies=[Depends(_refuse)])
    with pytest.raises(TypeError, match="its endpoint's parameters"):
        check_device_routes(app)


def _journal_size(service: Service) -> int:
    with service.admin() as admin:
        answer = admin.get("/api/v1/audit/verify")
    assert answer.status_code == 200, answer.text
    entries: int = answer.json()["entries"]
    return entries
