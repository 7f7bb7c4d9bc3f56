"""Servers whose test has ended, still stopping in the background.

A uvicorn server takes 0.1-0.2 s to stop (its main loop looks at ``should_exit`` every
0.1 s, then it gives open connections 0.1 s). A test that is over need not wait for
that: the ``service`` fixture stops its server in a thread of its own while the next test
runs, on its own port, data directory and database. Whatever must not run beside a
stopping server (dropping its PostgreSQL database, the end of the session) calls
:func:`finish_stopping` first, which also raises what went wrong while stopping.

The tests' own small servers (webhook receivers, token and identity providers, from
``http.server``) run through :func:`serving`, which stops them in a few milliseconds.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["finish_stopping", "serving", "stop_in_background"]

_stopping: list[threading.Thread] = []
_failures: list[BaseException] = []
_lock = threading.Lock()


def stop_in_background(stop: Callable[[], None]) -> None:
    """Run ``stop`` in a thread of its own; :func:`finish_stopping` waits for it and
    raises its error, if it had one (never the test running meanwhile)."""

    def stopping() -> None:
        try:
            stop()
        except BaseException as exc:  # kept for finish_stopping, not lost with the thread
            with _lock:
                _failures.append(exc)

    thread = threading.Thread(target=stopping, name="stopping-server", daemon=True)
    with _lock:
        _stopping[:] = [t for t in _stopping if t.is_alive()]
        _stopping.append(thread)
    thread.start()


def finish_stopping(timeout: float = 20.0) -> None:
    """Wait until every server stopping in the background has stopped; raise the first
    error one of them met."""
    with _lock:
        waiting, _stopping[:] = list(_stopping), []
    for thread in waiting:
        thread.join(timeout)
        assert not thread.is_alive(), f"a server did not stop within {timeout:g} s"
    with _lock:
        failures, _failures[:] = list(_failures), []
    if failures:
        raise failures[0]


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """``server`` serving in a thread until the block ends, then closed.

    ``serve_forever`` looks at a shutdown request only between polls, every 0.5 s by
    default, and every test with such a server paid that at its end; polled every 10 ms
    here."""
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
