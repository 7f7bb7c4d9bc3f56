"""The registration and renewal routes, served as raw ASGI (``DeviceRoute``), answer bad
requests exactly as every FastAPI route does: a 400 problem naming the fields, never the
input, and nothing journaled; a wrong method is 405 with ``Allow``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import Depends, Request
from fastapi.routing import APIRouter
from starlette.responses import Response

from imprint.api.device_route import DeviceRoute
from tests.integration.conftest import Service

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


def test_a_device_route_refuses_an_endpoint_it_cannot_call() -> None:
    router = APIRouter(route_class=DeviceRoute)
    with pytest.raises(TypeError, match=r"takes \(body, request, \.\.\.\)"):
        router.post("/x")(_request_first)
    for endpoint in (_plain_parameter, _sync_dependency):
        with pytest.raises(TypeError, match="an async function of the request"):
            router.post("/x")(endpoint)


def _journal_size(service: Service) -> int:
    with service.admin() as admin:
        answer = admin.get("/api/v1/audit/verify")
    assert answer.status_code == 200, answer.text
    entries: int = answer.json()["entries"]
    return entries
