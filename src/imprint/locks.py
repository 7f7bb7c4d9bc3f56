"""A lock for state that the event loop's requests share with threads.

On PostgreSQL the device plane's operations run as greenlets on the event loop's thread
(:func:`imprint.store.db.on_event_loop`), and every statement they make lets the loop run
the other requests until the server answers. A ``threading.Lock`` held across such a
statement breaks that: a second request on the loop that wants it blocks the loop's
thread, and with it the first request, which can then never finish and release it.

:class:`Lock` behaves as a ``threading.Lock`` for threads. A request on the event loop
that finds it held waits by giving the loop back, half a millisecond at first and up to
10 ms at a time, until the holder (another request, or a thread) lets go. Use it for
every lock that may be held across a database statement on the device plane's paths.

Code that runs on the event loop's thread but outside such a greenlet (an ``async``
route calling a store directly) cannot wait for a request of its own loop: it would
block the thread that request needs to finish. :meth:`Lock.acquire` refuses that case
with a :class:`RuntimeError` instead of hanging the process; such code belongs in
:func:`imprint.api.device_plane.run_blocking`, which runs it as a greenlet.
"""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from types import TracebackType

from sqlalchemy.util.concurrency import await_, in_greenlet

__all__ = ["Lock", "holds_a_lock"]

#: How many :class:`Lock` s this context holds (a SQLite commit group's member must not
#: stop for the group's write phase while it holds one: ``imprint.store.db``).
_held: ContextVar[int] = ContextVar("imprint_locks_held", default=0)


def holds_a_lock() -> bool:
    """Whether this context holds a :class:`Lock`."""
    return _held.get() > 0


#: How long a request on the event loop sleeps between two tries of a held lock: the
#: first pause, doubled after each try up to the longest (a lock held for long, say
#: by a thread making a large CRL, costs the waiting request a wake-up every 10 ms).
POLL_SECONDS = 0.0005
LONGEST_POLL_SECONDS = 0.01


class Lock:
    """A mutex for threads and for the event loop's requests alike (see the module)."""

    __slots__ = ("_lock", "_loop_holder")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: The thread whose event loop runs the greenlet holding the lock; None when
        #: it is free or a plain thread holds it.
        self._loop_holder: int | None = None

    def acquire(self) -> None:
        greenlet = in_greenlet()
        if not self._lock.acquire(blocking=False):
            if greenlet:
                pause = POLL_SECONDS
                while not self._lock.acquire(blocking=False):
                    await_(asyncio.sleep(pause))
                    pause = min(pause * 2, LONGEST_POLL_SECONDS)
            else:
                if self._loop_holder == threading.get_ident():
                    raise RuntimeError(
                        "a request on this event loop holds the lock; code on the loop's "
                        "thread outside a greenlet cannot wait for it without hanging the "
                        "loop: run it with imprint.api.device_plane.run_blocking"
                    )
                self._lock.acquire()
        if greenlet:
            self._loop_holder = threading.get_ident()
        _held.set(_held.get() + 1)

    def release(self) -> None:
        self._loop_holder = None
        _held.set(max(0, _held.get() - 1))
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.release()
