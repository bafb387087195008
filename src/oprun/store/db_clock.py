"""The database's clock, read once a second per process, not once per transaction.

Every API process takes its instants from the database (one clock for the whole
fleet, whatever the hosts' clocks say). Reading it in every transaction cost a
statement and a round trip each on the hot path (issue 12). Here a reading is
carried forward on this process's monotonic clock, which never steps, and read
again after `RESYNC` seconds: an instant is at most that old a reading plus the
elapsed time, off by the drift of two clocks over a second (microseconds). A
monotonic clock that runs backwards or leaps past `RESYNC` (a process under a
faked clock) forces a new reading at once, so no instant is ever carried across
such a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RESYNC = 1.0
"""Seconds a reading of the database's clock is carried forward before the next one."""


class DatabaseClock:
    """The database's clock as this process carries it between readings."""

    def __init__(self, resync: float = RESYNC) -> None:
        self.resync = resync
        self._base: tuple[float, float] | None = None
        """(the database's instant, this process's monotonic instant it was read at)."""

    def carried(self) -> float | None:
        """The database's instant now from the last reading; None when a new one is due."""
        base = self._base
        if base is None:
            return None
        elapsed = time.monotonic() - base[1]
        return base[0] + elapsed if 0 <= elapsed < self.resync else None

    def now(self, read: Callable[[], float]) -> float:
        """The database's instant: carried forward, or `read()` when a reading is due."""
        carried = self.carried()
        if carried is not None:
            return carried
        before = time.monotonic()
        instant = read()
        after = time.monotonic()
        # The reading was taken somewhere inside the round trip: say in its middle.
        self._base = (instant, (before + after) / 2)
        return instant
