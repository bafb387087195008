"""When a failed call is retried, and after how long. Pure: no I/O, no sleeping.

A call is retried only when repeating it cannot do anything twice: reads (GET),
deletes, and invocations, which always carry an idempotency key. It is retried on a
connection failure, on 429 (after the server's ``Retry-After``) and on 503, with
exponential backoff and jitter in between.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx

from oprun.sdk._requests import Call, retry_after_seconds

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how patiently a client retries a failed call.

    Attributes:
        retries: extra attempts after the first one (0 disables retrying).
        backoff: the first delay in seconds; each next one doubles.
        max_backoff: the longest delay between two attempts.
        max_retry_after: a ``Retry-After`` longer than this is not waited for: the
            error is raised instead.
    """

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(
        self, call: Call[Any], attempt: int, outcome: httpx.Response | Exception
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop and fail.

        `attempt` counts from 0 for the first try; `outcome` is the response that
        answered it or the transport error that kept it from being answered.
        """
        if not call.retry_safe or attempt >= self.retries:
            return None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRY_STATUSES:
                return None
            after = retry_after_seconds(outcome)
            if after is not None:
                return after if after <= self.max_retry_after else None
        elif not isinstance(outcome, httpx.TransportError):
            return None
        return self.backoff_for(attempt)

    def backoff_for(self, attempt: int) -> float:
        """Exponential backoff with jitter: half the step fixed, half random."""
        step = min(self.max_backoff, self.backoff * (2.0**attempt))
        return step / 2 + random.uniform(0, step / 2)
