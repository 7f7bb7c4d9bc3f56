"""Log lines: an exception's traceback never shows the values of local variables."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from imprint.logs import configure_logging, get_logger
from tests.stopping import finish_stopping


def _fail_holding_a_secret() -> None:
    passphrase = "hunter2-do-not-log"  # noqa: F841 - a local a rich traceback would print
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging sets up the root logger for the whole process: put it back, so
    tests that run later (in any order) see the logging pytest set up.

    A server of an earlier test in this process may still be stopping in the background
    (tests/stopping.py), logging through the root logger these tests configure: its lines
    (or, once its handler's stream is gone, logging's own error report) would land in the
    stderr a test here reads. Those servers are stopped first."""
    finish_stopping()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("json_format", [False, True])
def test_a_logged_exception_does_not_show_local_variables(
    json_format: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json_format=json_format)
    try:
        _fail_holding_a_secret()
    except RuntimeError:
        get_logger("test").exception("request_failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err
    assert "_fail_holding_a_secret" in err  # the traceback itself is there
    assert "hunter2-do-not-log" not in err
    if json_format:
        for line in err.strip().splitlines():
            assert "exception" in json.loads(line)


def _served(app: object, path: str) -> dict[bytes, bytes]:
    """Call an ASGI app once; the response headers."""
    import asyncio

    headers: dict[bytes, bytes] = {}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            headers.update(message["headers"])  # type: ignore[arg-type]

    scope = {"type": "http", "method": "POST", "path": path, "headers": [],
             "client": ("192.0.2.7", 4000)}  # fmt: skip
    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    return headers


@pytest.mark.parametrize("json_format", [False, True])
def test_each_request_logs_one_line_with_its_id_and_is_counted(
    json_format: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from imprint.api.middleware import RequestLogMiddleware
    from imprint.metrics import Metrics

    async def teapot(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 418, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    configure_logging("info", json_format=json_format)
    metrics = Metrics()
    app = RequestLogMiddleware(teapot, metrics=metrics)
    first = _served(app, "/api/v1/provision")
    second = _served(app, "/a\nforged line")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2  # the decoded newline did not start a line of its own
    ids = [first[b"x-request-id"].decode(), second[b"x-request-id"].decode()]
    assert ids[0] != ids[1]
    for line, request_id in zip(lines, ids, strict=True):
        if json_format:
            fields = json.loads(line)
            assert fields["event"] == "request"
            assert (fields["method"], fields["status"], fields["route"]) == (
                "POST",
                418,
                "unmatched",
            )
            assert fields["request_id"] == request_id
            assert fields["client"] == "192.0.2.7"
            assert isinstance(fields["ms"], float)
        else:
            assert "method=POST route=unmatched" in line
            assert "status=418 ms=" in line
            assert f"request_id={request_id} client=192.0.2.7" in line
    if json_format:
        assert json.loads(lines[1])["path"] == "/a\nforged line"
    else:
        assert "path='/a\\nforged line'" in lines[1]
    text = metrics.render().decode()
    assert 'imprint_http_requests_total{method="POST",route="unmatched",status="418"} 2.0' in text


def test_the_request_line_is_skipped_below_its_level(capsys: pytest.CaptureFixture[str]) -> None:
    from imprint.logs import RequestLog

    configure_logging("warning")
    RequestLog().write("GET", "/healthz", "/healthz", 200, 0.1, "x-1", None)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("json_format", [False, True])
def test_the_request_line_is_the_same_written_directly_or_through_a_filter(
    json_format: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """RequestLog writes straight to the handler configure_logging installs; a filter on
    the request logger (an embedder's, a test's) sends the line through logging's own
    path instead. The two lines differ in their timestamps alone, and the filter is
    obeyed."""
    from imprint.logs import REQUEST_LOGGER, RequestLog

    configure_logging("info", json_format=json_format)
    fields = ("POST", "/api/v1/provision", "/api/v1/provision", 200, 3.14159, "ab-1", "::1")
    RequestLog().write(*fields)
    logger = logging.getLogger(REQUEST_LOGGER)
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return record.args != ("GET", "/healthz", "/healthz", 200, 0.1, "x-2", None)

    logger.addFilter(keep)
    try:
        RequestLog().write(*fields)
        RequestLog().write("GET", "/healthz", "/healthz", 200, 0.1, "x-2", None)  # filtered out
    finally:
        logger.removeFilter(keep)
    direct, filtered = capsys.readouterr().err.strip().splitlines()
    assert len(seen) == 2
    if json_format:
        one, other = json.loads(direct), json.loads(filtered)
        assert one.pop("timestamp")
        assert other.pop("timestamp")
        assert one == other
        assert (one["ms"], one["request_id"], one["client"]) == (3.14, "ab-1", "::1")
    else:
        assert direct.split(" ", 1)[1] == filtered.split(" ", 1)[1]
        assert "ms=3.14 request_id=ab-1 client=::1" in direct


def test_the_request_line_skips_logging_only_when_nothing_else_listens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the handler configure_logging installs alone, the line is written without
    ``Logger.handle``; a second handler, or the line propagating to the root logger,
    sends it through logging again, and each listener gets it."""
    from imprint.logs import REQUEST_LOGGER, RequestLog

    configure_logging("info")
    logger = logging.getLogger(REQUEST_LOGGER)
    fields = ("GET", "/healthz", "/healthz", 200, 0.5, "cd-1", "192.0.2.1")
    handled: list[logging.LogRecord] = []
    real_handle = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        handled.append(record)
        real_handle(self, record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    RequestLog().write(*fields)
    assert handled == []
    assert "request_id=cd-1" in capsys.readouterr().err

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    second, root = Kept(), Kept()
    logger.addHandler(second)
    try:
        RequestLog().write(*fields)
    finally:
        logger.removeHandler(second)
    assert [r.args for r in second.records] == [fields]
    logging.getLogger().addHandler(root)
    logger.propagate = True
    try:
        RequestLog().write(*fields)
    finally:
        logger.propagate = False
        logging.getLogger().removeHandler(root)
    assert [r.args for r in root.records] == [fields]
    assert len(handled) == 2
    # Its own handler wrote both lines; while propagating, the root's handler too.
    assert capsys.readouterr().err.count("request_id=cd-1") == 3
