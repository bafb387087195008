"""When a failed call is retried, and after how long. Pure: no I/O, no sleeping.

A call is retried only when repeating it cannot do anything twice: reads (GET),
deletes, and invocations, which always carry an idempotency key. It is retried on a
connection failure, on 429 (after the server's ``Retry-After``) and on 503, with
exponential backoff and jitter in between (`oprun.domain.backoff`): `HttpRetry.retries`
times, or, for a call sent with a deadline (the requests of ``wait()``), for as long
as the deadline allows, so that waiting rides out a server restart.

`HttpRetry` is about HTTP calls only; which failed *tasks* run again is the action's
`oprun.RetryPolicy`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import httpx

from oprun.domain.backoff import backoff as backoff_delay
from oprun.sdk._requests import Call, retry_after_seconds

RETRY_STATUSES = frozenset({429, 503})
OUTAGE_PATIENCE = 300.0
"""How long `wait()` without a timeout, and an event stream, keep trying to reach a
server that is down or answers 429/503 before they raise the error."""


@dataclass(frozen=True)
class HttpRetry:
    """How many times and how patiently a client retries a failed HTTP call.

    Give one to a client to change the defaults::

        client = oprun.Client(retry=oprun.HttpRetry(retries=5, max_backoff=30))

    Attributes:
        retries: extra attempts after the first one (0 disables retrying).
        backoff: the first delay in seconds; each next one doubles.
        max_backoff: the longest delay between two attempts.
        max_retry_after: a ``Retry-After`` longer than this is not waited for: the
            error is raised instead.
        max_outage_backoff: the longest delay between two attempts of a call that
            waits out an outage until a deadline (`wait()`, event streams), so that
            a server that is back is noticed within seconds.
    """

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    max_outage_backoff: float = 2.0

    def __post_init__(self) -> None:
        for name in ("retries", "backoff", "max_backoff", "max_retry_after", "max_outage_backoff"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"HttpRetry.{name} must be 0 or more, got {value!r}")

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
        `left`, when given, is the time left before the caller's deadline: the number
        of retries is then unbounded, and a backoff is cut so that the last retry is
        made at the deadline (a server's ``Retry-After`` is never cut: a retry it
        would push past the deadline is not made).
        """
        if not call.retry_safe:
            return None
        if left is None and attempt >= self.retries:
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
