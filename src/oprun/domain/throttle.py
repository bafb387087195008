"""The rule for failed authentications: how many, within how long, before 429.

Pure: given the times of one client's recent failures and the clock, it says whether
the client may be answered (401) or must wait (429 with `Retry-After`). The state
(which clients, which times) lives in `oprun.service.throttle`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureRule:
    """At most `limit` failed authentications per client within `window` seconds."""

    limit: int
    window: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0:
            raise ValueError("a failure rule needs limit >= 1 and window > 0")

    def recent(self, failures: Sequence[float], now: float) -> tuple[float, ...]:
        """The failures that still count at `now` (the last `limit`, within the window)."""
        return tuple(t for t in failures[-self.limit :] if now - t < self.window)

    def retry_after(self, failures: Sequence[float], now: float) -> float | None:
        """Seconds until the client may fail again, or None if it may now.

        `failures` are times (seconds, ascending) of the client's failures. The client
        is throttled while `limit` of them lie within the last `window` seconds; it may
        try again when the oldest of those leaves the window.
        """
        counted = self.recent(failures, now)
        if len(counted) < self.limit:
            return None
        # The same difference `recent` compares, so float rounding of large times can
        # make the wait neither 0 (for a failure still counted) nor longer than a window.
        return self.window - (now - counted[0])

    def record(self, failures: Sequence[float], now: float) -> tuple[float, ...]:
        """`failures` with one more at `now`, keeping only what can still count."""
        return self.recent((*failures, now), now)


def retry_after_header(seconds: float) -> int:
    """A `Retry-After` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
