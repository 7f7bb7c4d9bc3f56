"""A webhook receiver for tests: a small HTTP server on 127.0.0.1, in a thread, that
checks each request's signature and answers what the test scripted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from imprint.webhooks.signing import verify
from tests.stopping import serving


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signed: bool

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """What arrived, and what to answer: ``statuses`` in turn (then 200), ``answer`` as
    the JSON body, ``delay`` seconds before answering (a slow receiver)."""

    url: str
    now: Callable[[], float]
    secret: str = ""
    statuses: list[int] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The requests once ``count`` have arrived (polled, with a deadline)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} arrived"
            time.sleep(0.02)
        return list(self.received)

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [r.event for r in self.received if r.headers.get("imprint-event-type") == event_type]


@contextmanager
def receiver(now: Callable[[], float] = time.time) -> Iterator[Receiver]:
    """A receiver serving until the block ends; ``now`` is the clock its signature
    check compares timestamps with (the server's, when a test moves it)."""
    box: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = box["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            signed = verify(target.secret, self.headers, body, now=target.now())
            target.received.append(Received(headers, body, signed))
            if target.delay:
                target.release.wait(target.delay)
            status = target.statuses.pop(0) if target.statuses else 200
            answer = json.dumps(target.answer or {}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the caller gave up waiting
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    box["receiver"] = Receiver(url=f"http://127.0.0.1:{port}/hook", now=now)
    with serving(server):
        try:
            yield box["receiver"]
        finally:
            box["receiver"].release.set()
