"""Servers whose test has ended, still stopping in the background.

A uvicorn server takes 0.1-0.2 s to stop (its main loop looks at ``should_exit`` every
0.1 s, then it gives open connections 0.1 s). A test that is over need not wait for
that: the ``service`` fixture stops its server in a thread of its own while the next test
runs, on its own port, data directory and database. Whatever must not run beside a
stopping server (dropping its PostgreSQL database, the end of the session) calls
:func:`finish_stopping` first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["finish_stopping", "stop_in_background"]

_stopping: list[threading.Thread] = []
_lock = threading.Lock()


def stop_in_background(stop: Callable[[], None]) -> None:
    """Run ``stop`` in a thread of its own; :func:`finish_stopping` waits for it."""
    thread = threading.Thread(target=stop, name="stopping-server", daemon=True)
    with _lock:
        _stopping[:] = [t for t in _stopping if t.is_alive()]
        _stopping.append(thread)
    thread.start()


def finish_stopping(timeout: float = 20.0) -> None:
    """Wait until every server stopping in the background has stopped."""
    with _lock:
        waiting, _stopping[:] = list(_stopping), []
    for thread in waiting:
        thread.join(timeout)
        assert not thread.is_alive(), "a server did not stop within 20 s"
