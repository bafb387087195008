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


class OncePer:
    """Per key, one event let through every `every` seconds, the others counted; bounded.

    Not thread-safe: its owner calls it under its own lock. Past `max_keys` keys the
    one let through longest ago is forgotten.
    """

    def __init__(self, every: float, max_keys: int) -> None:
        self.every = every
        self._max = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Per key: when its last event was let through, and the events held back since."""

    def admit(self, key: str, now: float, *, room: bool = True) -> int | None:
        """How many events of `key` were held back since its last one, letting this one through.

        None holds this one back (and counts it): the last was let through under
        `every` seconds ago, or the caller has no `room`.
        """
        last, held = self._last.pop(key, (-self.every, 0))
        admitted = room and now - last >= self.every
        self._last[key] = (now, 0) if admitted else (last, held + 1)
        while len(self._last) > self._max:
            self._last.popitem(last=False)
        return held if admitted else None

    def __len__(self) -> int:
        return len(self._last)


class FailureThrottle:
    """The failures of each client address, bounded in memory; thread-safe."""

    def __init__(self, rule: FailureRule, max_clients: int = MAX_CLIENTS) -> None:
        self.rule = rule
        self._max = max_clients
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._logged = OncePer(LOG_EVERY, max_clients)
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
            unlogged = self._logged.admit(client, now)
            if unlogged is None:
                return self.rule.retry_after(failures, now)
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
