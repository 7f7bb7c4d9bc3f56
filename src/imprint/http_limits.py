"""What one client may make the HTTP server hold: bytes, time and connections.

uvicorn's httptools protocol reads a request's headers without any bound (a 50 MB
header was read whole and answered 200) and waits for them forever.
:class:`LimitedProtocol` adds, per connection and per request (``server.limits``):

* request line and headers at most ``max_header_bytes`` and ``max_headers``: 431;
* the headers within ``header_timeout_seconds`` of the request's first byte (or of the
  connection's start): 408, then the connection is closed;
* the body without a pause longer than ``body_timeout_seconds`` (after the headers, or
  between two parts of it): else the connection is closed (the application may be
  reading it, so no answer can be written safely);
* at most ``max_connections`` connections per process and ``max_connections_per_source``
  per client address (trusted proxies are exempt): 503, then the connection is closed.

Refusals are written before the bytes in excess are kept, so the memory one client can
hold is about ``max_header_bytes`` plus one read (64 KiB), whatever it sends. Responses
the server writes itself carry uvicorn's default headers (HSTS, see
:func:`imprint.server.build_server`). The TLS handshake has its own deadline
(``handshake_timeout_seconds``, :class:`HandshakeDeadlineLoop`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import httptools
import uvloop

from imprint.settings import LimitSettings
from imprint.tls import PeerCertificateProtocol

__all__ = ["HandshakeDeadlineLoop", "LimitedProtocol", "limited_protocol"]

log = logging.getLogger("imprint.http")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long a refused connection may go on sending before it is cut off.
LINGER_SECONDS = 2.0

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that broke a limit."""


#: The open connections of each server (its uvicorn ``ServerState``) by client address,
#: kept as they open and close: a new connection's check does not walk all the others
#: (133 µs with 1,023 open, at the default ``max_connections``).
_open_by_source: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()


class LimitedProtocol(PeerCertificateProtocol):
    """uvicorn's httptools protocol with the peer certificate and the limits above."""

    limits: ClassVar[LimitSettings] = LimitSettings()
    exempt: ClassVar[tuple[Network, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False  # between a request's first byte and its last header
        self._header_bytes = 0  # bytes read while in the headers (some may be cut short)
        self._parsed_bytes = 0  # request line and headers the parser completed
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._source_count: Counter[str] | None = None  # where this connection is counted
        self._source_host = ""

    # Connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        by_source = _open_by_source.get(self.server_state)
        if by_source is None:
            by_source = _open_by_source[self.server_state] = Counter()
        refusal = self._connection_refusal(host, by_source)
        super().connection_made(transport)
        if host is not None:  # counted until connection_lost, refused or not
            by_source[host] += 1
            self._source_count, self._source_host = by_source, host
        if refusal is not None:
            self._refuse(503, "too_many_connections", refusal)
            return
        self._arm(self.limits.header_timeout_seconds, self._headers_late)

    def _connection_refusal(self, host: str | None, by_source: Counter[str]) -> str | None:
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            return "the server has too many open connections; try again later"
        if host is None or self._is_exempt(host):
            return None
        if by_source[host] >= limits.max_connections_per_source:
            log.warning("too many connections from one address", extra={"source": host})
            return f"too many open connections from {host}; close some and try again"
        return None

    def _is_exempt(self, host: str) -> bool:
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        counted, self._source_count = self._source_count, None
        if counted is not None:
            left = counted[self._source_host] - 1
            if left > 0:
                counted[self._source_host] = left
            else:
                del counted[self._source_host]
        super().connection_lost(exc)

    # Bytes ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
            self.send_400_response("Upgrades are not supported.")
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._parsed_bytes = 0
        self._header_count = 0
        self._arm(self.limits.header_timeout_seconds, self._headers_late)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._stop(431, "too_many_headers", f"more than {self.limits.max_headers} headers")
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        """Count what the parser hands over (a request whose headers all arrived in one
        read never reaches the check in :meth:`data_received`)."""
        self._parsed_bytes += size
        if self._parsed_bytes > self.limits.max_header_bytes:
            self._stop(
                431,
                "headers_too_large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._arm(self.limits.body_timeout_seconds, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.limits.body_timeout_seconds, self._body_late)  # progress: wait again
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _stop(self, status: int, code: str, detail: str) -> None:
        self._refusal = (status, code, detail)
        raise _Refused(detail)

    # Time -------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its connection is not idle
        log.info("request headers too slow", extra={"source": self._source()})
        self._refuse(
            408,
            "request_timeout",
            f"the request headers did not arrive within {self.limits.header_timeout_seconds:g} s",
        )

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.info("request body too slow", extra={"source": self._source()})
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.transport.close()

    # Answers ----------------------------------------------------------------------------

    def _source(self) -> str | None:
        return self.client[0] if self.client else None

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer ``status`` as problem+json and close the connection."""
        self._disarm()
        self._refusal = (status, code, detail)
        body = json.dumps(
            {
                "type": f"urn:imprint:problem:{code}",
                "title": _REASONS[status].decode(),
                "status": status,
                "detail": detail,
                "code": code,
            }
        ).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/problem+json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()
            # Closing TLS waits for the client's close_notify and reads (and drops) what
            # it still sends meanwhile; give it a moment to read the answer, not 30 s.
            self.loop.call_later(LINGER_SECONDS, self.transport.abort)


def limited_protocol(limits: LimitSettings, exempt: Sequence[str] = ()) -> type[LimitedProtocol]:
    """The protocol class uvicorn builds each connection with, bound to ``limits``.

    ``exempt`` are addresses or networks (trusted proxies) without a per-source limit.
    """
    networks = tuple(ipaddress.ip_network(item, strict=False) for item in exempt)
    return type("ImprintHttpProtocol", (LimitedProtocol,), {"limits": limits, "exempt": networks})


class HandshakeDeadlineLoop(uvloop.Loop):
    """uvloop's event loop, with a deadline for every TLS handshake of the servers it
    creates (uvicorn does not pass one, and asyncio's default is 60 s)."""

    handshake_timeout: float = 10.0

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
        return await super().create_server(*args, **kwargs)
