"""The failed-attempt limiter on its own, with a clock the tests move."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from imprint.attestation.base import TooManyAttempts
from imprint.provisioning.ratelimit import (
    AttemptLimiter,
    Space,
    guessable_keys,
    refusal_keys,
)


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def fail(limiter: AttemptLimiter, claim: str, source: str) -> None:
    with limiter.attempt(guessable_keys(claim, source)) as attempt:
        attempt.failed()


def test_an_identity_named_like_an_address_is_another_key() -> None:
    limiter = AttemptLimiter(Clock().now)
    for _ in range(10):
        fail(limiter, "oob-secret:10.0.0.1", "10.0.0.2")
    with pytest.raises(TooManyAttempts):
        fail(limiter, "oob-secret:10.0.0.1", "10.0.0.2")
    # The address 10.0.0.1 itself, and the name from elsewhere, are untouched.
    with limiter.attempt(guessable_keys("user:homer", "10.0.0.1")):
        pass
    with limiter.attempt(guessable_keys("oob-secret:10.0.0.1", "10.0.0.3")):
        pass


def test_a_success_gives_its_place_back() -> None:
    limiter = AttemptLimiter(Clock().now)
    for _ in range(100):
        with limiter.attempt(guessable_keys("user:homer", "10.0.0.1")):
            pass  # the right password: nothing stays counted


def test_successes_leave_no_counters_behind() -> None:
    # A fleet registering: each device claims its own identity once and succeeds. Nothing
    # about those attempts is worth keeping (each counter costs about a kilobyte).
    limiter = AttemptLimiter(Clock().now)
    for n in range(1000):
        with limiter.attempt(guessable_keys(f"oob-secret:meter-{n}", "10.0.0.1")):
            assert limiter.counters() == 3  # reserved while it runs: source, claim, both
    assert limiter.counters() == 0


def test_an_empty_limiter_is_still_true() -> None:
    # The runtime hands its one limiter to the provisioner as `limiter or a new one`
    # was written: an empty limiter must not read as absent (a private one each).
    assert AttemptLimiter(Clock().now)


def test_a_success_after_failures_aged_out_leaves_no_counters() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock.now)
    fail(limiter, "user:homer", "10.0.0.1")
    with limiter.attempt(guessable_keys("user:homer", "10.0.0.1")):
        pass  # a success does not wipe the failure before it
    assert limiter.counters() == 3
    clock.advance(3601)  # past every rule's window (the longest is an hour)
    with limiter.attempt(guessable_keys("user:homer", "10.0.0.1")):
        pass
    assert limiter.counters() == 0


def test_the_limit_per_window_and_the_retry_after() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock.now)
    for _ in range(10):
        fail(limiter, "user:homer", "10.0.0.1")
        clock.advance(1)
    with pytest.raises(TooManyAttempts) as limited:
        fail(limiter, "user:homer", "10.0.0.1")
    # The oldest failure is 10 s old: it ages out in 50 s.
    assert 50 <= limited.value.retry_after <= 51
    clock.advance(50)
    fail(limiter, "user:homer", "10.0.0.1")


def test_the_global_backoff_takes_many_addresses() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock.now)
    # One address gives at most 30 failures an hour to a name (10 a minute).
    for _ in range(3):
        for _ in range(10):
            fail(limiter, "user:homer", "10.0.0.1")
        clock.advance(61)
    with pytest.raises(TooManyAttempts):
        fail(limiter, "user:homer", "10.0.0.1")
    with limiter.attempt(guessable_keys("user:homer", "10.9.9.9")):
        pass  # the owner elsewhere
    # Ten addresses at that pace reach the name's budget of 300 an hour: then everyone
    # waits, the owner too (the price of bounding a distributed guesser).
    for source in range(1, 10):
        for _ in range(3):
            for _ in range(10):
                fail(limiter, "user:homer", f"10.0.1.{source}")
            clock.advance(61)
    with pytest.raises(TooManyAttempts):
        fail(limiter, "user:homer", "10.9.9.9")
    clock.advance(3600)
    with limiter.attempt(guessable_keys("user:homer", "10.9.9.9")):
        pass


def test_refusals_of_unguessable_evidence_are_counted_after_the_fact() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock.now)
    counted = [limiter.refused(refusal_keys("10.0.0.1")) for _ in range(12)]
    assert counted[:10] == [None] * 10
    assert all(isinstance(retry, int) and 1 <= retry <= 61 for retry in counted[10:])
    assert limiter.refused(refusal_keys("10.0.0.2")) is None
    clock.advance(61)
    assert limiter.refused(refusal_keys("10.0.0.1")) is None


def hold(stack: ExitStack, limiter: AttemptLimiter, count: int, source: str) -> None:
    """``count`` attempts from ``source`` in progress until ``stack`` closes (each at
    a device of its own, ``oob-secret:meter-0`` on)."""
    for n in range(count):
        stack.enter_context(limiter.attempt(guessable_keys(f"oob-secret:meter-{n}", source)))


def test_attempts_in_progress_fill_an_address_and_are_told_apart_from_failures() -> None:
    """An address may have 30 attempts at guessable credentials in progress at once
    (its ``source`` rule, in flight counted, decision 0011): the 31st waits a moment,
    told it is too many at once, not too many failures; each one that succeeds makes
    room again. Failures that fill the same rule are told as failures."""
    clock = Clock()
    limiter = AttemptLimiter(clock.now)
    with ExitStack() as in_progress:
        hold(in_progress, limiter, 30, "10.0.0.1")
        with pytest.raises(TooManyAttempts, match="in progress") as crowded:
            fail(limiter, "oob-secret:meter-30", "10.0.0.1")
        assert crowded.value.retry_after == 2  # no failure to age out: soon
        fail(limiter, "oob-secret:meter-30", "10.0.0.2")  # another address is not held
    with limiter.attempt(guessable_keys("oob-secret:meter-30", "10.0.0.1")):
        pass  # the 30 succeeded: room again
    for n in range(30):
        fail(limiter, f"oob-secret:wrong-{n}", "10.0.0.3")
    with pytest.raises(TooManyAttempts, match="failed attempts"):
        fail(limiter, "oob-secret:meter-31", "10.0.0.3")
    # Failures and attempts in flight together: a failure's ageing sets the wait.
    for n in range(5):
        fail(limiter, f"oob-secret:wrong-{n}", "10.0.0.4")
    clock.advance(10)
    with ExitStack() as in_progress:
        hold(in_progress, limiter, 25, "10.0.0.4")
        with pytest.raises(TooManyAttempts, match="failed attempts") as mixed:
            fail(limiter, "oob-secret:meter-25", "10.0.0.4")
        assert 50 <= mixed.value.retry_after <= 51


def test_reservations_make_the_limit_exact_under_concurrency() -> None:
    limiter = AttemptLimiter(Clock().now)
    start, release = threading.Barrier(60), threading.Event()
    through: list[int] = []
    refused: list[int] = []

    def guess(n: int) -> None:
        start.wait(timeout=10)
        try:
            with limiter.attempt(guessable_keys("oob-secret:meter-1", "10.0.0.1")) as attempt:
                through.append(n)
                release.wait(timeout=10)  # every verification still running
                attempt.failed()
        except TooManyAttempts:
            refused.append(n)
            if len(refused) == 50:
                release.set()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert (len(through), len(refused)) == (10, 50)


def test_a_flood_of_addresses_is_bounded() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock.now, max_keys=100)
    for n in range(1000):
        limiter.refused(refusal_keys(f"10.1.{n // 256}.{n % 256}"))
        clock.advance(0.1)
    assert limiter.counters() <= 100
    assert limiter.rules[Space.REFUSED][0].limit == 10


def test_a_flood_of_distinct_sources_costs_little_memory_per_counter() -> None:
    """A counter of one failure stays small: the limiter may keep 100,000 of them (a
    flood from as many addresses) until their windows pass. An empty deque alone took
    600 bytes; with its key a counter took about 1 KB."""
    import tracemalloc

    limiter = AttemptLimiter(Clock().now)
    sources = [f"198.51.{n // 256}.{n % 256}" for n in range(10_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for source in sources:
            assert limiter.refused([(Space.SOURCE, source)]) is None
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert limiter.counters() == len(sources)
    assert grown / len(sources) < 400, f"{grown / len(sources):.0f} bytes a counter"
