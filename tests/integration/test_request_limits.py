"""The HTTP server's limits against a real TLS server: oversized and slow requests are
cut off early, and the server's memory stays flat while it happens."""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imprint.settings import LimitSettings, Settings
from tests.integration.conftest import Service, start_service

MiB = 1024 * 1024


def rss() -> int:
    """This process's resident memory in bytes (the server runs in it, in a thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def with_limits(settings: Settings, **limits: object) -> Settings:
    server = settings.server.model_copy(
        update={"limits": LimitSettings.model_validate({**LimitSettings().model_dump(), **limits})}
    )
    return settings.model_copy(update={"server": server})


@pytest.fixture
def limited(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """A server with short handshake, header, body and keep-alive deadlines, and room for
    300 connections from one address."""
    yield from start_service(
        with_limits(
            settings,
            header_timeout_seconds=2.0,
            body_timeout_seconds=2.0,
            handshake_timeout_seconds=2.0,
            keep_alive_seconds=2.0,
            max_connections_per_source=400,
        ),
        tmp_path,
    )


def connect(service: Service, source: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection to ``service`` from the loopback address ``source``."""
    context = ssl.create_default_context(cafile=str(service.root_cert))
    port = int(service.base_url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def send_ignoring_close(tls: ssl.SSLSocket, data: bytes, chunk: int = 65536) -> int:
    """Send ``data`` until the server closes; return how much went out."""
    sent = 0
    try:
        for start in range(0, len(data), chunk):
            tls.sendall(data[start : start + chunk])
            sent += chunk
    except (ssl.SSLError, OSError):
        pass
    return sent


def read_answer(tls: ssl.SSLSocket) -> bytes:
    received = b""
    try:
        while chunk := tls.recv(65536):
            received += chunk
    except (ssl.SSLError, OSError):
        pass
    return received


def big_header_request(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * size + b"\r\n\r\n"


def test_a_64_kib_header_gets_431_within_a_second_and_memory_stays_flat(
    service: Service,
) -> None:
    with connect(service) as warm:  # the first handshake allocates what later ones reuse
        warm.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_answer(warm).startswith(b"HTTP/1.1 200")
    before = rss()
    for _ in range(5):
        with connect(service) as tls:
            started = time.monotonic()
            send_ignoring_close(tls, big_header_request(64 * 1024))
            answer = read_answer(tls)
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"application/problem+json" in answer
        assert b'"code": "headers_too_large"' in answer
        assert elapsed < 1.0, f"431 after {elapsed:.2f} s"
    # A 50 MB header is refused after the limit; the server reads and drops the rest
    # for a moment (TLS closing), then cuts the connection off. It never holds it.
    with connect(service) as tls:
        send_ignoring_close(tls, big_header_request(50 * MiB))
        answer = read_answer(tls)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    grown = rss() - before
    assert grown < 16 * MiB, f"RSS grew {grown / MiB:.1f} MiB"
    with connect(service) as tls:  # and the server still answers
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_answer(tls).startswith(b"HTTP/1.1 200")


def test_too_many_headers_get_431(service: Service) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    with connect(service) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        answer = read_answer(tls)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code": "too_many_headers"' in answer


def test_a_body_arriving_with_its_headers_is_not_mistaken_for_headers(service: Service) -> None:
    body = b'{"mechanism": "oob-secret", "csr": "' + b"A" * 200_000 + b'"}'
    request = (
        b"POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    with connect(service) as tls:
        tls.sendall(request)
        answer = read_answer(tls)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 413), answer[:300]  # judged by the application, not 431


@pytest.mark.slow
def test_a_connection_stalling_in_its_headers_is_closed_within_the_timeout(
    limited: Service,
) -> None:
    with connect(limited) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        answer = read_answer(tls)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code": "request_timeout"' in answer
    assert 1.5 < elapsed < 2.0 + 5.0, f"closed after {elapsed:.2f} s (timeout 2 s)"


@pytest.mark.slow
def test_a_connection_stalling_in_its_body_is_closed_within_the_timeout(
    limited: Service,
) -> None:
    with connect(limited) as tls:
        tls.sendall(
            b"POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"mechanism": '
        )
        started = time.monotonic()
        answer = read_answer(tls)
        elapsed = time.monotonic() - started
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
    assert 1.5 < elapsed < 2.0 + 5.0, f"closed after {elapsed:.2f} s (timeout 2 s)"


@pytest.mark.slow
def test_a_connection_that_never_completes_its_tls_handshake_is_closed(
    limited: Service,
) -> None:
    port = int(limited.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        try:
            answer = raw.recv(1024)
        except OSError:
            answer = b""
        elapsed = time.monotonic() - started
    assert answer == b""
    assert 1.5 < elapsed < 2.0 + 5.0, f"closed after {elapsed:.2f} s (timeout 2 s)"


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_closed(limited: Service) -> None:
    with connect(limited) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += tls.recv(65536)
        started = time.monotonic()
        rest = read_answer(tls)
        elapsed = time.monotonic() - started
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    assert rest == b""
    assert 1.5 < elapsed < 2.0 + 5.0, f"closed after {elapsed:.2f} s (keep-alive 2 s)"


@pytest.mark.slow
def test_300_half_header_connections_are_all_closed_and_memory_stays_flat(
    limited: Service,
) -> None:
    connect(limited).close()
    before = rss()
    selector = selectors.DefaultSelector()
    opened: list[ssl.SSLSocket] = []
    try:
        for _ in range(300):
            tls = connect(limited)
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
            tls.setblocking(False)
            selector.register(tls, selectors.EVENT_READ)
            opened.append(tls)
        open_at_peak = len(opened)
        deadline = time.monotonic() + 2.0 + 30.0  # the timeout, and a margin for a busy machine
        closed: set[ssl.SSLSocket] = set()
        while len(closed) < len(opened) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                tls = key.fileobj
                assert isinstance(tls, ssl.SSLSocket)
                try:
                    while tls.recv(65536):
                        pass
                except ssl.SSLWantReadError:
                    continue
                except (ssl.SSLError, OSError):
                    pass
                selector.unregister(tls)
                closed.add(tls)
        grown = rss() - before
    finally:
        for tls in opened:
            tls.close()
        selector.close()
    assert open_at_peak == 300
    assert len(closed) == 300, f"{300 - len(closed)} connections still open"
    assert grown < 32 * MiB, f"RSS grew {grown / MiB:.1f} MiB for 300 connections"
    with connect(limited) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_answer(tls).startswith(b"HTTP/1.1 200")


@pytest.fixture
def three_per_source(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    yield from start_service(with_limits(settings, max_connections_per_source=3), tmp_path)


def test_connections_per_source_address_are_limited(three_per_source: Service) -> None:
    held = [connect(three_per_source) for _ in range(3)]
    try:
        for tls in held:  # each is open and served
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200")
        with connect(three_per_source) as extra:
            answer = read_answer(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b'"code": "too_many_connections"' in answer
    finally:
        for tls in held:
            tls.close()
    # Once the server has seen them go, a new connection is served again.
    deadline = time.monotonic() + 10
    while True:
        with connect(three_per_source) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_answer(tls)
        if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_each_source_address_has_its_own_count(three_per_source: Service) -> None:
    """Three connections from one address do not count against another, and the address
    is served again once its own are gone."""
    held = [connect(three_per_source, "127.0.0.2") for _ in range(3)]
    try:
        with connect(three_per_source, "127.0.0.2") as extra:
            assert read_answer(extra).startswith(b"HTTP/1.1 503")
        others = [connect(three_per_source, "127.0.0.3") for _ in range(3)]
        try:
            for tls in others:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert tls.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for tls in others:
                tls.close()
    finally:
        for tls in held:
            tls.close()
    deadline = time.monotonic() + 10
    while True:
        with connect(three_per_source, "127.0.0.2") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_answer(tls)
        if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
