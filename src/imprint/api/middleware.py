"""Pure ASGI middleware: body size limit, request log and metrics."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from imprint.api.problems import problem_response
from imprint.logs import RequestLog
from imprint.metrics import Metrics

__all__ = ["BodyLimitMiddleware", "CaughtUpMiddleware", "RequestLogMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"


_SESSION_COOKIE = b"__Host-imprint-console="  # imprint.console.session.SESSION_COOKIE


def _has_credentials(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization" or (name == b"cookie" and _SESSION_COOKIE in value):
            return True
    return False


class CaughtUpMiddleware:
    """Each request begins having heard of every change committed before it through
    another process: the workers sharing a SQLite file look for one another's changes
    every 50 ms (:mod:`imprint.store.cache`), and a request looks itself first, so that
    a change made through one worker (an enrollment's channel, a client CA) is what the
    next request sees on any worker. A look is one ``PRAGMA``, and when a change of a
    cached kind was committed since the last one, one small SELECT; nothing on
    PostgreSQL, whose notifications arrive as their transactions commit."""

    def __init__(self, app: ASGIApp, look: Callable[[], object]) -> None:
        self.app = app
        self.look = look

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.look()
        await self.app(scope, receive, send)


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
    """One log line and one metrics sample per request (path only, no query string).

    Each request gets an id, ``<process>-<counter>`` in hex, sent back in
    ``X-Request-Id`` and written in its log line. The line carries method, route
    template, path, status, latency in ms, request id and client address; logging and
    metrics together cost tens of microseconds (``python -m bench.inproc middleware``).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = RequestLog()
        self._prefix = os.urandom(3).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"{self._prefix}-{next(self._counter):x}"
        sent = _StatusSend(send, request_id.encode())
        try:
            await self.app(scope, receive, sent)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(method, template, sent.status, elapsed)
            client = scope.get("client")
            self.log.write(
                method,
                template,
                scope["path"],
                sent.status,
                elapsed * 1000,
                request_id,
                client[0] if client else None,
            )


class _StatusSend:
    """The ``send`` of one request: notes the status, adds the request id header."""

    __slots__ = ("_request_id", "_send", "status")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self._send = send
        self._request_id = request_id
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [
                *message.get("headers", ()),
                (REQUEST_ID_HEADER, self._request_id),
            ]
        await self._send(message)
