"""The device SDK's backoff schedule, run on a fake clock against scripted answers."""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from imprint.device.errors import ServiceUnavailable, VerificationFailed
from imprint.device.retry import RetryPolicy, parse_retry_after, send_with_retry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def answers(*items: httpx.Response | Exception) -> Callable[[], httpx.Response]:
    queue = list(items)

    def send() -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return send


def problem(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code}, headers=headers)


def test_full_jitter_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base=1, factor=2, cap=8)
    assert [policy.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    rng = random.Random(7)
    for retry in range(1, 7):
        delays = [policy.delay(retry, rng) for _ in range(500)]
        assert all(0 <= d < policy.ceiling(retry) for d in delays)
        # jitter: spread over the whole range, not a fixed step
        assert max(delays) - min(delays) > policy.ceiling(retry) * 0.8


def test_retry_after_overrides_the_backoff() -> None:
    clock = FakeClock()
    send = answers(
        problem(503, "unavailable", **{"Retry-After": "7"}),
        problem(429, "too_many_attempts", **{"Retry-After": "3"}),
        httpx.Response(200, json={}),
    )
    response = send_with_retry(send, RetryPolicy(), clock=clock, rng=random.Random(1))
    assert response.status_code == 200
    assert clock.sleeps == [7, 3]


def test_connection_errors_and_5xx_back_off_with_jitter_then_succeed() -> None:
    clock = FakeClock()
    send = answers(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        problem(502, "bad_gateway"),
        httpx.Response(200, json={}),
    )
    policy = RetryPolicy(base=0.5, factor=2, cap=30)
    send_with_retry(send, policy, clock=clock, rng=random.Random(3))
    assert len(clock.sleeps) == 3
    for retry, slept in enumerate(clock.sleeps, start=1):
        assert 0 <= slept < policy.ceiling(retry)


def test_a_final_refusal_is_returned_at_once() -> None:
    clock = FakeClock()
    response = send_with_retry(
        answers(problem(403, "signature_invalid")), RetryPolicy(), clock=clock, rng=random.Random()
    )
    assert response.status_code == 403
    assert clock.sleeps == []


def test_gives_up_after_max_attempts_with_the_last_reason() -> None:
    clock = FakeClock()
    send = answers(*(problem(503, "unavailable") for _ in range(3)))
    with pytest.raises(ServiceUnavailable, match=r"503 \(unavailable\); gave up after 3") as raised:
        send_with_retry(send, RetryPolicy(max_attempts=3), clock=clock, rng=random.Random(5))
    assert raised.value.status == 503
    assert raised.value.code == "unavailable"
    assert len(clock.sleeps) == 2


def test_gives_up_when_retry_after_reaches_past_max_elapsed() -> None:
    clock = FakeClock()
    send = answers(problem(429, "too_many_attempts", **{"Retry-After": "600"}))
    with pytest.raises(ServiceUnavailable, match="after 120 s") as raised:
        send_with_retry(send, RetryPolicy(max_elapsed=120), clock=clock, rng=random.Random())
    assert raised.value.retry_after == 600
    assert clock.sleeps == []  # it did not sleep ten minutes to fail anyway


def test_no_connection_at_all() -> None:
    clock = FakeClock()
    send = answers(*(httpx.ConnectError("refused") for _ in range(2)))
    with pytest.raises(ServiceUnavailable, match="cannot reach the server") as raised:
        send_with_retry(send, RetryPolicy(max_attempts=2), clock=clock, rng=random.Random())
    assert raised.value.status is None


def test_an_untrusted_server_certificate_is_final() -> None:
    clock = FakeClock()
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "unable to get local issuer certificate"
    error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]")
    error.__cause__ = failure
    with pytest.raises(VerificationFailed, match="unable to get local issuer certificate"):
        send_with_retry(answers(error), RetryPolicy(), clock=clock, rng=random.Random())
    assert clock.sleeps == []


def test_parse_retry_after() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 5 ") == 5
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


@pytest.mark.parametrize(
    "fields",
    [
        {"base": 0},
        {"factor": 0.5},
        {"base": 10, "cap": 1},
        {"max_attempts": 0},
        {"max_elapsed": -1},
    ],
)
def test_nonsense_policies_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|needs"):
        RetryPolicy(**fields)  # type: ignore[arg-type]
