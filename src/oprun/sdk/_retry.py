"""When a failed call is retried, and after how long. Pure: no I/O, no sleeping.

A call is retried only when repeating it cannot do anything twice: reads (GET),
deletes, and invocations, which always carry an idempotency key. It is retried on a
connection failure, on 429 (after the server's ``Retry-After``) and on 503, with
exponential backoff and jitter in between (`oprun.domain.backoff`): for up to
`HttpRetry.budget` seconds by default, long enough to ride out an API restart, or
`HttpRetry.retries` times when a count is set; a call sent with a deadline (the
requests of ``wait()``) is retried for as long as the deadline allows.

With several endpoints (`oprun.sdk._failover`), a retry goes to another one at once,
with no backoff, while one is up; and a request that surely never reached a server
(its connection could not be made) goes to the next endpoint even when the call is
not safe to repeat.

`HttpRetry` is about HTTP calls only; which failed *tasks* run again is the action's
`oprun.RetryPolicy`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from oprun.domain.backoff import backoff as backoff_delay
from oprun.sdk._failover import Endpoint, Endpoints, not_sent
from oprun.sdk._requests import Call, retry_after_seconds, succeeded

RETRY_STATUSES = frozenset({429, 503})
OUTAGE_PATIENCE = 300.0
"""How long `wait()` without a timeout, and an event stream, keep trying to reach a
server that is down or answers 429/503 before they raise the error."""


@dataclass(frozen=True)
class HttpRetry:
    """How long and how patiently a client retries a failed HTTP call.

    Give one to a client to change the defaults::

        client = oprun.Client(retry=oprun.HttpRetry(budget=60))  # ride out a minute
        client = oprun.Client(retry=oprun.HttpRetry(retries=3))  # three retries, then fail

    Attributes:
        retries: extra attempts after the first one (0 disables retrying); None, the
            default, retries for as long as `budget` allows instead.
        budget: seconds a call safe to repeat keeps being retried when `retries` is
            None: 30 by default, longer than an API process takes to restart.
        backoff: the first delay in seconds; each next one doubles.
        max_backoff: the longest delay between two attempts counted by `retries`.
        max_retry_after: a ``Retry-After`` longer than this is not waited for: the
            error is raised instead.
        max_outage_backoff: the longest delay between two attempts of a call that is
            retried until a deadline (`budget`, `wait()`, event streams), so that a
            server that is back is noticed within seconds.
    """

    retries: int | None = None
    budget: float = 30.0
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    max_outage_backoff: float = 2.0

    def __post_init__(self) -> None:
        names = ("retries", "budget", "backoff", "max_backoff", "max_retry_after")
        for name in (*names, "max_outage_backoff"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"HttpRetry.{name} must be 0 or more, got {value!r}")

    def deadline(self, started: float, until: float | None = None) -> float | None:
        """When retrying a call begun at `started` stops: `until` if given, else the budget's end.

        None when `retries` counts the attempts instead.
        """
        if until is not None:
            return until
        return started + self.budget if self.retries is None else None

    def delay(
        self,
        call: Call[Any],
        attempt: int,
        outcome: httpx.Response | Exception,
        *,
        left: float | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop and fail.

        `attempt` counts from 0 for the first try; `outcome` is the response that
        answered it or the transport error that kept it from being answered.
        `left`, when given, is the time left before the deadline (see `deadline`):
        the number of retries is then unbounded, and a backoff is cut so that the
        last retry is made at the deadline (a server's ``Retry-After`` is never cut:
        a retry it would push past the deadline is not made). Without it, `retries`
        counts (and None allows no retry).
        """
        if not call.retry_safe:
            return None
        if left is None and (self.retries is None or attempt >= self.retries):
            return None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRY_STATUSES:
                return None
            after = retry_after_seconds(outcome)
            if after is not None:
                fits = after <= self.max_retry_after and (left is None or after < left)
                return after if fits else None
        elif not isinstance(outcome, httpx.TransportError):
            return None
        if left is None:
            return self.backoff_for(attempt)
        delay = min(self.backoff_for(attempt), self.max_outage_backoff)
        return min(delay, left) if left > 0 else None

    def backoff_for(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half the step fixed, half random."""
        return backoff_delay(attempt, self.backoff, self.max_backoff, random.random())


def http_retry(retry: HttpRetry | None, retries: int | None) -> HttpRetry:
    """A client's policy: `retry` (else the defaults), its count replaced by `retries` if given."""
    policy = retry or HttpRetry()
    return policy if retries is None else dataclasses.replace(policy, retries=retries)


class Attempts:
    """The attempts of one call: where each goes, and how long to wait before the next.

    No I/O: the client sends and sleeps. Time spent counts what the clock says, or
    the waits asked for when they add up to more (a test's sleep that does not sleep).
    """

    def __init__(
        self,
        policy: HttpRetry,
        call: Call[Any],
        endpoints: Endpoints,
        *,
        until: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.call = call
        self.endpoints = endpoints
        self.clock = clock
        self.started = clock()
        self.deadline = policy.deadline(self.started, until)
        self.attempt = 0
        self.waited = 0.0
        self.failovers = 0
        """Attempts sent to another endpoint at once, after one failed."""

    def after(self, endpoint: Endpoint, outcome: httpx.Response | Exception) -> float | None:
        """Seconds to wait before the next attempt, or None: `outcome` is the call's answer.

        `outcome` is what the attempt sent to `endpoint` got: a response, or the
        exception that kept it from getting one.
        """
        self.endpoints.observe(endpoint, outcome)
        if succeeded(outcome):
            return None
        elsewhere = self.endpoints.elsewhere(endpoint, outcome)
        if elsewhere and not_sent(outcome):
            self.failovers += 1
            return 0.0
        left = None if self.deadline is None else self.deadline - self.now()
        delay = self.policy.delay(self.call, self.attempt, outcome, left=left)
        if delay is None:
            return None
        self.attempt += 1
        if elsewhere:
            self.failovers += 1
            return 0.0
        self.waited += delay
        return delay

    def now(self) -> float:
        """The time, moved on by at least the waits asked for so far."""
        return max(self.clock(), self.started + self.waited)
