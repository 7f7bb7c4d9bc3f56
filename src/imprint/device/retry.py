"""Retrying politely: jittered exponential backoff that honours Retry-After.

A fleet that lost its server must not come back as a thundering herd, so every retry
waits a random time in ``[0, min(cap, base * factor ** n))`` ("full jitter"). What is
retried: connection errors and timeouts, 5xx answers and 429. A 4xx other than 429 is
final and returned at once. When the server sends ``Retry-After`` (seconds or an HTTP
date), that is the wait instead. Retrying stops after ``max_attempts`` attempts, or
when the next wait would end past ``max_elapsed`` seconds from the first attempt.

Time and randomness come from a :class:`Clock` and a :class:`random.Random`, so tests
run the schedule without sleeping.
"""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from imprint.device.errors import ServiceUnavailable, VerificationFailed

__all__ = [
    "Clock",
    "RetryPolicy",
    "SystemClock",
    "parse_retry_after",
    "retryable_status",
    "send_with_retry",
]


class Clock(Protocol):
    """Where the SDK reads the time and sleeps; tests pass a fake one."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up.

    Attributes:
        base: the first backoff ceiling, in seconds.
        factor: how much the ceiling grows per attempt.
        cap: the largest ceiling.
        max_attempts: attempts in all, the first one included (1 = never retry).
        max_elapsed: seconds from the first attempt after which no retry starts.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    max_attempts: int = 6
    max_elapsed: float = 120.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if self.max_attempts < 1 or self.max_elapsed < 0:
            raise ValueError("max_attempts must be at least 1 and max_elapsed not negative")

    def ceiling(self, retry: int) -> float:
        """The largest wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.cap, self.base * self.factor ** (retry - 1))

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """How long to wait before retry number ``retry``: Retry-After, else full jitter."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return rng.uniform(0.0, self.ceiling(retry))


def retryable_status(status: int) -> bool:
    """429 and 5xx may succeed later; every other answer is final."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _refuse_untrusted_server(exc: httpx.TransportError) -> None:
    """A server certificate that does not verify is final: retrying cannot change it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise VerificationFailed(
                f"the server's TLS certificate does not verify: {cause.verify_message}; "
                "is the CA file the one the server's certificate chains to?"
            ) from None
        cause = cause.__cause__ or cause.__context__
    return


def send_with_retry(
    send: Callable[[], httpx.Response],
    policy: RetryPolicy,
    *,
    clock: Clock,
    rng: random.Random,
) -> httpx.Response:
    """Call ``send`` until it gives a final answer, backing off between attempts.

    ``send`` is called afresh for every attempt, so it can build new evidence (a fresh
    nonce) each time.

    Returns:
        The first answer that is not 429 or 5xx (success or a final refusal).

    Raises:
        ServiceUnavailable: still 429, 5xx or no connection when the attempts or the time
            ran out, or the server asked to wait longer than the time left.
        VerificationFailed: the server's TLS certificate does not verify (not retried).
    """
    started = clock.monotonic()
    retry = 0
    while True:
        status: int | None = None
        code: str | None = None
        retry_after: float | None = None
        try:
            response = send()
        except httpx.TransportError as exc:
            _refuse_untrusted_server(exc)
            reason = f"cannot reach the server ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if not retryable_status(response.status_code):
                return response
            status, code = response.status_code, _problem_code(response)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            reason = f"the server answered {status}" + (f" ({code})" if code else "")
        retry += 1
        if retry >= policy.max_attempts:
            raise ServiceUnavailable(
                f"{reason}; gave up after {retry} attempt(s)",
                status=status,
                code=code,
                retry_after=retry_after,
            )
        wait = policy.delay(retry, rng, retry_after)
        if clock.monotonic() - started + wait > policy.max_elapsed:
            raise ServiceUnavailable(
                f"{reason}; gave up: the next attempt would be after {policy.max_elapsed:g} s",
                status=status,
                code=code,
                retry_after=retry_after,
            )
        clock.sleep(wait)
