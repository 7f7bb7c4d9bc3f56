"""Pure ASGI middleware: body size limit, request log and metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from imprint.api.problems import problem_response
from imprint.logs import get_logger
from imprint.metrics import Metrics

__all__ = ["BodyLimitMiddleware", "RequestLogMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = get_logger("imprint.http")


_SESSION_COOKIE = b"__Host-imprint-console="  # imprint.console.session.SESSION_COOKIE


def _has_credentials(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization" or (name == b"cookie" and _SESSION_COOKIE in value):
            return True
    return False


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, before reading them whole.

    Paths matching ``uploads`` (the bulk imports) have ``upload_limit`` instead, when
    the request carries credentials (a bearer token, or the console's session cookie):
    an anonymous caller cannot make the server read more than ``limit``.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        *,
        upload_limit: int | None = None,
        uploads: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.default_limit = limit
        self.upload_limit = upload_limit or limit
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = (
            self.uploads is not None
            and self.uploads.fullmatch(scope["path"]) is not None
            and _has_credentials(scope)
        )
        await self._limited(
            self.upload_limit if upload else self.default_limit, scope, receive, send
        )

    async def _limited(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit or declared < 0:
                    response = problem_response(
                        413 if declared > limit else 400,
                        "body_too_large" if declared > limit else "request_invalid",
                        f"request bodies are limited to {limit} bytes"
                        if declared > limit
                        else "invalid Content-Length",
                    )
                    await response(scope, receive, send)
                    return
        seen = 0
        exceeded = False

        async def limited_receive() -> Message:
            # Past the limit the application is told the client went away, so it stops
            # reading; the 413 is sent below once it has unwound.
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            response = problem_response(
                413, "body_too_large", f"request bodies are limited to {limit} bytes"
            )
            await response(scope, receive, send)


class RequestLogMiddleware:
    """One log line and one metrics sample per request (path only, no query string)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], template, status, elapsed)
            client = scope.get("client")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed * 1000, 2),
                client=client[0] if client else None,
            )
