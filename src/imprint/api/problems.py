"""RFC 9457 problem details: the one shape of every error response.

The body always has ``type``, ``title``, ``status``, ``detail`` and a stable ``code``.
It never carries a stack trace, the rejected input, or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imprint.api.refusals import record_refusal
from imprint.attestation.base import AttestationFailed, TooManyAttempts
from imprint.errors import (
    AuthenticationRequired,
    CAError,
    Conflict,
    ImprintError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UpstreamError,
)
from imprint.logs import get_logger

__all__ = ["install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)


_STATUS: list[tuple[type[ImprintError], int]] = [
    (TooManyAttempts, 429),
    (AttestationFailed, 403),
    (InvalidRequest, 400),
    (AuthenticationRequired, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (UpstreamError, 502),
    (CAError, 503),
]

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Too many requests",
    422: "Invalid request",
    500: "Internal error",
    502: "Bad gateway",
    503: "Unavailable",
}


def status_of(error: ImprintError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"urn:imprint:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _imprint_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImprintError)
    status = status_of(exc)
    record_refusal(request, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, TooManyAttempts):
        headers = {"Retry-After": str(exc.retry_after)}
    if status >= 500:
        log.error("request_failed", code=exc.code, detail=exc.message)
    return problem_response(status, exc.code, exc.message, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Report where and what, never the rejected input (it may be a secret).
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "message": err["msg"],
        }
        for err in exc.errors()
    ]
    fields = ", ".join(e["field"] or "body" for e in errors)
    return problem_response(
        422, "request_invalid", f"the request is not valid: {fields}", errors=errors
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    return problem_response(exc.status_code, code, detail, headers=exc.headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected_error", error=type(exc).__name__)
    return problem_response(500, "internal_error", "an internal error occurred")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImprintError, _imprint_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
