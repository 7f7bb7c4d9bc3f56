"""The OpenAPI document, made to describe what the server really answers.

FastAPI documents each route's success and a 422 validation error. imprint answers
every error as ``application/problem+json`` and bad input as 400, and some answers
follow from what a route depends on, not from its code. One pass over the generated
document adds them, so a new route is described correctly without per-route work:

- 400 ``request_invalid`` (replacing FastAPI's 422) for a route with parameters or a body;
- 401 and 403 for a route that reads the caller's credentials (its ``security``);
- 404 for a route with path parameters, or with credentials and a body naming objects;
- 409 for a state-changing route that needs credentials;
- 413 for a route with a body (``server.max_body_bytes``);
- whatever a route declares itself with ``responses={...}`` (429, 502, ...);

and gives every error response the problem+json content and schema. The routes of the
device protocols with wire formats of their own (idprov, midPoint, the connector and
ThingSpeak writes) keep those forms; docs/api.md says which they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imprint.api.problems import PROBLEM_JSON, TITLES

__all__ = ["PROBLEM_SCHEMA", "install_openapi"]

#: What ``application/problem+json`` bodies hold (RFC 9457 and imprint's ``code``).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable, for programs"},
        "errors": {
            "type": "array",
            "description": "With request_invalid: each field and what is wrong with it",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_CHANGES = {"post", "put", "patch", "delete"}


def _general_statuses(method: str, operation: dict[str, Any]) -> set[int]:
    """What any operation of this shape can answer, whatever its code does."""
    parameters = operation.get("parameters", [])
    statuses: set[int] = set()
    if parameters or "requestBody" in operation:
        statuses.add(400)
    if operation.get("security"):  # it reads the caller's credentials (identity.BEARER)
        statuses.update((401, 403))
        if method in _CHANGES:
            statuses.add(409)
    if any(p.get("in") == "path" for p in parameters) or (
        operation.get("security") and "requestBody" in operation
    ):
        statuses.add(404)  # the object named, or one the body names, is not there
    if "requestBody" in operation:
        statuses.add(413)
    return statuses


def _problem(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or TITLES.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def describe(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app``, with every answer its routes can give."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for general in _general_statuses(method, operation):
                responses.setdefault(str(general), {})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response.update(_problem(int(status), response.get("description")))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    app.openapi_schema = document
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`describe`'s document at the app's ``openapi_url``."""
    app.openapi = lambda: describe(app)  # type: ignore[method-assign]
