"""imprint.locks.Lock: a request on the event loop (a greenlet, as the device plane runs
on PostgreSQL) that finds the lock held waits without stopping the loop, so the holder,
itself waiting for the database, can finish and let go."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.util.concurrency import await_, greenlet_spawn

from imprint.locks import Lock


def test_a_request_waits_for_another_that_holds_the_lock_across_a_statement() -> None:
    lock = Lock()
    order: list[str] = []

    def holder() -> None:
        with lock:
            order.append("first in")
            await_(asyncio.sleep(0.02))  # as a statement waits for the server
            order.append("first out")

    def waiter() -> None:
        with lock:
            order.append("second in")

    async def both() -> None:
        # A threading.Lock here blocks the loop's thread in waiter() for good: holder()
        # can never resume to release it.
        await asyncio.wait_for(asyncio.gather(greenlet_spawn(holder), greenlet_spawn(waiter)), 5)

    asyncio.run(both())
    assert order == ["first in", "first out", "second in"]
    assert not lock.locked()


def test_the_loop_keeps_serving_while_a_request_waits_for_a_thread() -> None:
    lock = Lock()
    taken, release = threading.Event(), threading.Event()

    def thread_holder() -> None:
        with lock:
            taken.set()
            release.wait(5)

    async def scenario() -> tuple[int, bool]:
        holder = threading.Thread(target=thread_holder)
        holder.start()
        taken.wait(5)
        acquired = False

        def request() -> None:
            nonlocal acquired
            with lock:
                acquired = True

        waiting = asyncio.ensure_future(greenlet_spawn(request))
        ticks = 0
        for _ in range(10):  # other requests go on meanwhile
            await asyncio.sleep(0.002)
            ticks += 1
        still_waiting = not waiting.done()
        release.set()
        await asyncio.wait_for(waiting, 5)
        holder.join(5)
        return ticks, still_waiting and acquired

    ticks, waited_then_acquired = asyncio.run(scenario())
    assert ticks == 10
    assert waited_then_acquired


def test_code_on_the_loop_outside_a_greenlet_is_refused_instead_of_hanging() -> None:
    lock = Lock()
    holding = asyncio.Event()

    def holder() -> None:
        with lock:
            holding.set()
            await_(asyncio.sleep(0.05))  # as a statement waits for the server

    def watchdog(stop: threading.Event) -> None:
        # Without the refusal the loop's thread would block in acquire() for good: let
        # it go after 5 s, so the test fails instead of hanging the suite.
        if not stop.wait(5):
            lock._lock.release()

    async def scenario() -> str:
        held = asyncio.ensure_future(greenlet_spawn(holder))
        await holding.wait()
        stop = threading.Event()
        threading.Thread(target=watchdog, args=(stop,), daemon=True).start()
        try:
            lock.acquire()  # an async route calling a store directly, on the loop's thread
        except RuntimeError as exc:
            outcome = str(exc)
        else:  # the old behaviour: blocked until the watchdog let it go
            outcome = "acquired"
        finally:
            stop.set()
        await asyncio.wait_for(held, 5)
        with lock:  # free again: plain code on the loop takes it at once
            pass
        return outcome

    outcome = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert "run_blocking" in outcome
    assert not lock.locked()


def test_threads_exclude_each_other() -> None:
    lock = Lock()
    count = 0

    def add() -> None:
        nonlocal count
        for _ in range(2000):
            with lock:
                value = count
                count = value + 1

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count == 8000
