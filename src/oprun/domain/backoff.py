"""How long to wait before trying again: exponential backoff with equal jitter, capped.

One formula for every retry in oprun: the SDK's HTTP retries (`oprun.sdk.HttpRetry`),
the worker's calls to a server that is down (`oprun.worker.client`), and a failed
task's next attempt (`oprun.domain.models.RetryPolicy.delay`)::

    step  = min(cap, first * 2**exponent)
    delay = step * (0.5 + jitter / 2)        # between half the step and all of it

"Equal jitter" keeps half of each step fixed and draws the other half, so clients
that failed together spread out while none retries sooner than half its step. Pure:
the caller passes the jitter (`random.random()`, or a fixed value in tests).
"""

from __future__ import annotations

MAX_EXPONENT = 1023
"""Doublings beyond this are not computed: `2.0 ** 1024` overflows a float (the cap
has long been reached by then)."""


def backoff(exponent: int, first: float, cap: float, jitter: float) -> float:
    """Seconds to wait: `first` doubled `exponent` times, at most `cap`, with equal jitter.

    Args:
        exponent: how many times the delay has doubled so far (0 for the first retry;
            a negative count is taken as 0).
        first: the first step, in seconds.
        cap: the longest step, in seconds.
        jitter: in [0, 1]: 0 waits half the step, 1 all of it.
    """
    step = min(cap, first * 2.0 ** min(max(exponent, 0), MAX_EXPONENT))
    return step * (0.5 + jitter / 2)
