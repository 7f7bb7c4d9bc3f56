"""Structured logging with structlog: console lines by default, JSON as an option.

Log events name what happened and carry identifiers (serials, key names, paths) but
never secrets: tokens, passphrases, keys and query strings are not passed to the
logger in the first place.
"""

from __future__ import annotations

import logging
import sys
import time
from json.encoder import encode_basestring
from typing import TextIO

import structlog

__all__ = ["REQUEST_LOGGER", "RequestLog", "configure_logging", "get_logger"]

#: The logger of the one line per HTTP request (:class:`RequestLog`).
REQUEST_LOGGER = "imprint.http.requests"
_REQUEST_FORMAT = "request method=%s route=%s path=%r status=%s ms=%s request_id=%s client=%s"


def _drop_color_message(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    event.pop("color_message", None)  # uvicorn's duplicate of the message, with ANSI codes
    return event


def configure_logging(level: str = "info", *, json_format: bool = False) -> None:
    """Route structlog and the standard library (uvicorn, alembic) through one renderer."""
    # Tracebacks are rendered plain: a "rich" one lists every frame's local variables,
    # which may hold secrets, and costs seconds of CPU per error (cheap to provoke).
    renderer: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json_format
        else [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our own middleware logs each request, without its query string.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The request line has a handler of its own that formats it directly: the general
    # renderer costs about 200 µs a line, more than a small request's whole budget.
    requests = logging.getLogger(REQUEST_LOGGER)
    requests.handlers[:] = [_RequestLineHandler(sys.stderr, json_format=json_format)]
    requests.propagate = False


class RequestLog:
    """The request line, prepared: a level check, then the line written by the handler
    :func:`configure_logging` installs, straight from the fields (no ``LogRecord``, no
    processors, no dicts: 14 µs against 25 in a registration's midst, bench/README.md,
    step 45). With any other handler or filter on :data:`REQUEST_LOGGER`, or with its
    lines propagating to the root logger (a test's, an embedder's), it makes one
    ``LogRecord`` with the fields as a tuple and hands it to them, and the record reads
    as plain text in any handler.
    """

    __slots__ = ("_logger",)

    def __init__(self, name: str = REQUEST_LOGGER) -> None:
        self._logger = logging.getLogger(name)

    def write(
        self,
        method: str,
        route: str,
        path: str,
        status: int,
        ms: float,
        request_id: str,
        client: str | None,
    ) -> None:
        logger = self._logger
        if logger.disabled or not logger.isEnabledFor(logging.INFO):
            return
        fields = (method, route, path, status, round(ms, 2), request_id, client)
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.filters and not logger.propagate:
            handler = handlers[0]
            if type(handler) is _RequestLineHandler and handler.takes_directly():
                handler.write_line(logger.name, fields)
                return
        logger.handle(_record(logger.name, fields))


def _record(name: str, fields: tuple[object, ...]) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 0, _REQUEST_FORMAT, fields, None)


class _RequestLineFormatter(logging.Formatter):
    """Renders :class:`RequestLog` records as the other lines look (console or JSON),
    straight from the record's fields; any other record as plain text."""

    def __init__(self, *, json_format: bool) -> None:
        super().__init__()
        self._json = json_format
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, milliseconds by hand
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1e6):06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if record.msg is not _REQUEST_FORMAT or not isinstance(args, tuple) or len(args) != 7:
            return super().format(record)
        return self.request_line(args, record.created)

    def request_line(self, args: tuple[object, ...], created: float) -> str:
        """The line of a request's fields (:meth:`RequestLog.write`), logged at ``created``."""
        method, route, path, status, ms, request_id, client = (str(a) for a in args)
        stamp = self._timestamp(created)
        if self._json:
            return (
                f'{{"event": "request", "level": "info", "timestamp": "{stamp}", '
                f'"method": {encode_basestring(method)}, "route": {encode_basestring(route)}, '
                f'"path": {encode_basestring(path)}, "status": {status}, "ms": {ms}, '
                f'"request_id": "{request_id}", "client": '
                f"{'null' if args[6] is None else encode_basestring(client)}}}"
            )
        if not path.isprintable():
            path = repr(path)  # a decoded %0A stays on its line
        if not method.isprintable():
            method = repr(method)
        return (
            f"{stamp} [info     ] request  method={method} route={route} path={path} "
            f"status={status} ms={ms} request_id={request_id} client={client}"
        )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


class _RequestLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The request logger's handler: a stream handler with a :class:`_RequestLineFormatter`
    that :class:`RequestLog` also writes to directly."""

    def __init__(self, stream: TextIO, *, json_format: bool) -> None:
        super().__init__(stream)
        self.line_formatter = _RequestLineFormatter(json_format=json_format)
        self.setFormatter(self.line_formatter)

    def takes_directly(self) -> bool:
        """Whether a line may skip ``handle``: no filter, no level above INFO, and its own
        formatter still set."""
        return (
            not self.filters
            and self.level <= logging.INFO
            and self.formatter is self.line_formatter
        )

    def write_line(self, name: str, fields: tuple[object, ...]) -> None:
        """Write the request line of ``fields`` (logger ``name``'s) as ``handle`` and
        ``emit`` would write its record: under the handler's lock, a failure reported by
        ``handleError``."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            try:
                self.stream.write(
                    self.line_formatter.request_line(fields, time.time()) + self.terminator
                )
                self.flush()
            except RecursionError:
                raise
            except Exception:
                self.handleError(_record(name, fields))
