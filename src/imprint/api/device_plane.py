"""Where the device-facing routes run their blocking work (decision 0013).

The device routes are ``async def`` with ``async`` dependencies: no thread-pool hop
for FastAPI's dependency injection or the endpoint. The use case behind them
(:class:`~imprint.provisioning.service.Provisioner`, the channel writes, CSR signing)
is synchronous and talks to the database; :func:`run_blocking` decides where it runs:

- **SQLite**: on the event loop, inline. A statement on a local file takes
  microseconds; the writer lock (:mod:`imprint.store.db`) serializes writers anyway,
  and a thread hop costs 140-200 µs of CPU, more than the statements it would carry.
- **PostgreSQL**: on the event loop too, as a greenlet whose statements go through
  psycopg's async connection (:func:`imprint.store.db.on_event_loop`, decision 0016):
  while one request waits for the server, the loop serves the others. No thread hop,
  and no contention for the GIL between the loop and a pool of threads.
- **A network call or a subprocess during provisioning** (an enrollment whose hub
  tokens come from an external token endpoint, up to its 5 s timeout; an
  organization's provisioning hook, up to its own timeout; the MQTT broker's files and
  reload after each certificate change, when ``mqtt.enabled``): in the thread pool,
  whatever the database, so a slow provider cannot stall every other device. On
  PostgreSQL the question is asked inside the greenlet, so even its reads (answered
  from memory, but from the database while the cache cannot trust its memory) never
  block the loop.

The per-device lock, the certificate's record (committed with the request, before any
answer carries the certificate), the outbox messages in the transaction and the audit
entries are the use case's and do not change with where it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from imprint.runtime import Runtime
from imprint.store.db import grouped, in_a_thread, on_event_loop, runs_on_event_loop

__all__ = ["inline", "run_blocking"]

P = ParamSpec("P")
T = TypeVar("T")


def inline(runtime: Runtime) -> bool:
    """Whether this runtime's device work runs on the event loop (see the module)."""
    if runtime.engine.dialect.name != "sqlite" and not runs_on_event_loop(runtime.engine):
        return False
    return not _calls_out(runtime)


def _calls_out(runtime: Runtime) -> bool:
    """Whether a registration may wait for the network or a subprocess."""
    return (
        runtime.settings.mqtt.enabled
        or runtime.enrollments.any_external_hub()
        or runtime.webhook_store.any_hook()
    )


async def run_blocking(
    runtime: Runtime, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``function(*args, **kwargs)`` on the event loop (inline on SQLite, a greenlet on
    PostgreSQL) or in one thread-pool hop (see the module)."""
    engine = runtime.engine
    work = functools.partial(function, *args, **kwargs)
    if runs_on_event_loop(engine):
        return await on_event_loop(engine, _here_or_in_a_thread, runtime, work)
    if inline(runtime):  # SQLite
        return await grouped(engine, work)
    return await run_in_threadpool(work)


def _here_or_in_a_thread(runtime: Runtime, work: Callable[[], T]) -> T:
    """In the greenlet: ``work()`` here, or in a thread when it may call out."""
    if _calls_out(runtime):
        return in_a_thread(work)
    return work()
