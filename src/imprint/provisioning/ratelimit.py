"""Failed-attempt limits: separate key spaces, exact under concurrency, fair to owners.

The threat model is decision 0011 (``docs/decisions/0011-failed-attempt-limits.md``).
In short:

- A credential that can be **guessed** (an OOB secret, a registration-key half, a
  password, a configured OAuth client secret) is limited *before* it is verified, in
  three key spaces: the source address (:attr:`Space.SOURCE`), the claimed identity
  from that address (:attr:`Space.CLAIM_SOURCE`) and the claimed identity from every
  address (:attr:`Space.CLAIM`, a backoff that takes many addresses to reach). A
  stranger elsewhere fills only their own address's counters, so the owner presenting
  the right credential from another address is not locked out.
- Evidence that cannot be guessed (a signature, a 256-bit key) is verified first; only
  a *failure* is counted, per source (:attr:`Space.REFUSED`), and answered 429 once
  that source has failed too often. The right evidence always passes, whoever failed
  before it: a stranger's failures never block the owner.

Each attempt at a guessable credential reserves a place in every counter it touches
before it is verified (:meth:`AttemptLimiter.attempt`); a success gives it back. So 60
concurrent wrong guesses against a limit of 10 let exactly 10 through to verification.

Kept in process memory, timed by the server's clock: see the decision for why not in
the database and what that means with several worker processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from imprint.attestation.base import TooManyAttempts

__all__ = [
    "DEFAULT_RULES",
    "Attempt",
    "AttemptLimiter",
    "Key",
    "Rule",
    "Space",
    "guessable_keys",
    "refusal_keys",
]


class Space(StrEnum):
    """A key space: counters in one space never share a key with another's."""

    SOURCE = "source"
    """Failed guesses from one address, at any identity."""
    CLAIM_SOURCE = "claim@source"
    """Failed guesses at one claimed identity from one address."""
    CLAIM = "claim"
    """Failed guesses at one claimed identity from every address: the global backoff."""
    REFUSED = "refused"
    """Refused unguessable evidence from one address, counted after verification."""
    SIGNUP = "signup"
    """Self-registrations from one address (each counts)."""
    RELAY = "relay"
    """Browser-relay requests from one address (each counts)."""


Key = tuple[Space, str]


@dataclass(frozen=True, slots=True)
class Rule:
    """At most ``limit`` counted attempts in any ``window`` seconds."""

    limit: int
    window: float


#: The limits every server applies (decision 0011 explains the numbers).
DEFAULT_RULES: Mapping[Space, tuple[Rule, ...]] = {
    Space.SOURCE: (Rule(30, 60.0),),
    Space.CLAIM_SOURCE: (Rule(10, 60.0), Rule(30, 3600.0)),
    Space.CLAIM: (Rule(300, 3600.0),),
    Space.REFUSED: (Rule(10, 60.0),),
    Space.SIGNUP: (Rule(10, 60.0),),
}


def guessable_keys(claim: str | None, source: str | None) -> tuple[Key, ...]:
    """The counters an attempt at a guessable credential reserves.

    Args:
        claim: the identity claimed, prefixed by its kind (``oob-secret:meter-7``,
            ``user:homer``, ``client:cli-1f``); None when the request names none.
        source: the caller's address; None when unknown.
    """
    keys: list[Key] = []
    if source is not None:
        keys.append((Space.SOURCE, source))
    if claim is not None:
        keys.append((Space.CLAIM, claim))
        # The separator cannot occur in an address, so no two pairs share a key.
        keys.append((Space.CLAIM_SOURCE, f"{claim}\n{source or '-'}"))
    return tuple(keys)


def refusal_keys(source: str | None) -> tuple[Key, ...]:
    """The counter a refusal of unguessable evidence adds to."""
    return () if source is None else ((Space.REFUSED, source),)


@dataclass(slots=True)
class _Counter:
    #: Times of the failures within the rules' longest window, oldest first. A list,
    #: not a deque: an empty deque takes 600 bytes, and there may be 100,000 counters
    #: (a flood of distinct addresses); a full counter refuses, so a list stays as
    #: short as the largest rule's limit, and aged failures go in one slice.
    failures: list[float] = field(default_factory=list)
    in_flight: int = 0


class Attempt:
    """One reserved attempt: :meth:`failed` keeps it counted; otherwise it is given back
    when the ``with`` block of :meth:`AttemptLimiter.attempt` ends."""

    def __init__(self) -> None:
        self.counted = False

    def failed(self) -> None:
        """The credential was wrong: the attempt stays counted for the rules' windows."""
        self.counted = True


class AttemptLimiter:
    """Counters of failed attempts per key, with rules per key space.

    Args:
        now: the server's clock (``runtime.clock.now``).
        rules: the rules of each key space; a space without rules is not limited.
        max_keys: counters kept at most; beyond it, the longest quiet are forgotten.
    """

    def __init__(
        self,
        now: Callable[[], datetime],
        rules: Mapping[Space, Sequence[Rule]] = DEFAULT_RULES,
        max_keys: int = 100_000,
    ) -> None:
        self._now = now
        self.rules: dict[Space, tuple[Rule, ...]] = {s: tuple(r) for s, r in rules.items()}
        self._max_keys = max_keys
        self._counters: dict[Key, _Counter] = {}
        self._lock = threading.Lock()

    @contextmanager
    def attempt(self, keys: Iterable[Key]) -> Iterator[Attempt]:
        """Reserve one attempt in every counter of ``keys``, or refuse it.

        The reservation counts against the limits while the block runs, so concurrent
        attempts cannot overtake one another. Call :meth:`Attempt.failed` when the
        credential is wrong; otherwise the reservation is given back.

        Raises:
            TooManyAttempts: a counter is full (its recent failures plus the attempts
                in flight reach a rule's limit); nothing is reserved. Its message says
                which: failed attempts (a failure's ageing out sets the wait), or too
                many in progress (only attempts in flight fill the counters, such as
                more than 30 honest ones at once from one address).
        """
        wanted = tuple(dict.fromkeys(k for k in keys if self.rules.get(k[0])))
        with self._lock:
            now = self._seconds()
            waits = [self._wait(key, now) for key in wanted]
            retry = max((seconds for seconds, _ in waits), default=0)
            if retry:
                failed = any(on_failures for _, on_failures in waits)
                raise TooManyAttempts(
                    "too many failed attempts; try again later"
                    if failed
                    else "too many attempts in progress; try again later",
                    retry_after=retry,
                )
            self._make_room(now, len(wanted))
            for key in wanted:
                self._counters.setdefault(key, _Counter()).in_flight += 1
        attempt = Attempt()
        try:
            yield attempt
        finally:
            with self._lock:
                now = self._seconds()
                for key in wanted:
                    counter = self._counters.setdefault(key, _Counter())
                    counter.in_flight -= 1
                    if attempt.counted:
                        counter.failures.append(now)
                    elif not counter.in_flight and not counter.failures:
                        # Nothing to remember: a success leaves no counter behind (a
                        # fleet's registrations would otherwise fill max_keys).
                        del self._counters[key]

    def refused(self, keys: Iterable[Key]) -> int | None:
        """Count a refusal of evidence that was verified and found wrong.

        Returns:
            None when the refusal was counted (answer it as itself); the seconds to wait
            when its source is over a limit already (answer 429). Refusals over the limit
            are not stored, so a flood cannot grow the counters.
        """
        wanted = tuple(dict.fromkeys(k for k in keys if self.rules.get(k[0])))
        with self._lock:
            now = self._seconds()
            retry = max((self._full_for(key, now) for key in wanted), default=0)
            if retry:
                return retry
            self._make_room(now, len(wanted))
            for key in wanted:
                self._counters.setdefault(key, _Counter()).failures.append(now)
        return None

    def count(self, keys: Iterable[Key]) -> None:
        """Count an attempt that always counts (a sign-up, a relay request), or refuse it.

        Raises:
            TooManyAttempts: a counter is full.
        """
        with self.attempt(keys) as attempt:
            attempt.failed()

    def counters(self) -> int:
        """Counters kept: keys with an attempt in flight or a failure not yet found aged
        out. (A method, not ``__len__``: an empty limiter must not be falsy.)"""
        with self._lock:
            return len(self._counters)

    def _seconds(self) -> float:
        return self._now().timestamp()

    def _full_for(self, key: Key, now: float) -> int:
        """Seconds until ``key`` has room under all its rules; 0 when it has room now."""
        return self._wait(key, now)[0]

    def _wait(self, key: Key, now: float) -> tuple[int, bool]:
        """:meth:`_full_for`'s seconds, and whether a recent failure sets them (False:
        only attempts in flight fill the counter, and the wait is a guess)."""
        counter = self._counters.get(key)
        if counter is None:
            return 0, False
        rules = self.rules[key[0]]
        failures = counter.failures
        longest = max(rule.window for rule in rules)
        aged = 0
        while aged < len(failures) and failures[aged] <= now - longest:
            aged += 1
        if aged:
            del failures[:aged]
        if not failures and not counter.in_flight:
            del self._counters[key]  # every failure aged out
            return 0, False
        wait, on_failures = 0.0, False
        for rule in rules:
            recent = [t for t in failures if t > now - rule.window]
            if len(recent) + counter.in_flight >= rule.limit:
                # Room comes when enough of the recent failures age out; with attempts
                # in flight and no failures yet, a second is a fair guess.
                excess = len(recent) + counter.in_flight - rule.limit
                if excess < len(recent):
                    wait, on_failures = max(wait, recent[excess] + rule.window - now), True
                else:
                    wait = max(wait, 1.0)
        return (0, False) if wait <= 0 else (max(1, int(wait) + 1), on_failures)

    def _make_room(self, now: float, adding: int) -> None:
        """Forget quiet counters once there are too many (an address flood)."""
        if len(self._counters) + adding <= self._max_keys:
            return
        for key in list(self._counters):
            counter = self._counters[key]
            longest = max(rule.window for rule in self.rules[key[0]])
            if counter.in_flight == 0 and (
                not counter.failures or counter.failures[-1] <= now - longest
            ):
                del self._counters[key]
        if len(self._counters) + adding > self._max_keys:
            quiet = sorted(
                (k for k, c in self._counters.items() if c.in_flight == 0),
                key=lambda k: self._counters[k].failures[-1] if self._counters[k].failures else 0,
            )
            for key in quiet[: len(self._counters) + adding - self._max_keys]:
                del self._counters[key]
