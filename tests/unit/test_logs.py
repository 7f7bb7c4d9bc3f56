"""Log lines: an exception's traceback never shows the values of local variables."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from imprint.logs import configure_logging, get_logger


def _fail_holding_a_secret() -> None:
    passphrase = "hunter2-do-not-log"  # noqa: F841 - a local a rich traceback would print
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging sets up the root logger for the whole process: put it back, so
    tests that run later (in any order) see the logging pytest set up."""
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
