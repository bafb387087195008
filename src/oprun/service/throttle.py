"""Failed authentications per client address: who is throttled, and a log that can't flood.

Per process: with N API processes behind a balancer a client may fail up to N times
the limit before every process throttles it (a shared limiter would cost a database
write per failure, which is what an attacker would then aim at).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from oprun.domain.throttle import FailureRule

log = logging.getLogger("oprun.auth")
MAX_CLIENTS = 10_000
"""Addresses tracked at once; past it the one that failed longest ago is forgotten."""
LOG_EVERY = 1.0
"""Seconds between two `auth_failed` lines about one address (the others are counted)."""


class FailureThrottle:
    """The failures of each client address, bounded in memory; thread-safe."""

    def __init__(self, rule: FailureRule, max_clients: int = MAX_CLIENTS) -> None:
        self.rule = rule
        self._max = max_clients
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._logged: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Per address: when its last line was written, and the failures since not logged."""

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds `client` must wait, or None when it is not throttled."""
        with self._lock:
            failures = self._failures.get(client, ())
        return self.rule.retry_after(failures, now)

    def fail(self, client: str, reason: str, now: float) -> float | None:
        """Count a failed authentication from `client` and log it (at most once a second).

        Returns how long `client` must now wait (None: it is not throttled). Failures
        while throttled count too: a client that keeps guessing stays throttled.
        """
        with self._lock:
            failures = self.rule.record(self._failures.pop(client, ()), now)
            self._failures[client] = failures  # now the newest
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)
            last, unlogged = self._logged.pop(client, (-LOG_EVERY, 0))
            if now - last < LOG_EVERY:
                self._logged[client] = (last, unlogged + 1)
                return self.rule.retry_after(failures, now)
            self._logged[client] = (now, 0)
            while len(self._logged) > self._max:
                self._logged.popitem(last=False)
        log.warning(
            "event=auth_failed client=%s reason=%s recent_failures=%d unlogged=%d",
            client,
            reason,
            len(failures),
            unlogged,
        )
        return self.rule.retry_after(failures, now)

    def tracked(self) -> int:
        """How many addresses are remembered (bounded by `max_clients`)."""
        with self._lock:
            return len(self._failures)
