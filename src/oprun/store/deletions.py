"""Which operations users deleted since a process last looked, told by their events.

Deleting an operation records an `operation.deleted` event in the same transaction.
A process that keeps something derived from finished operations (`oprun.store.kept`,
`oprun.store.throughput`) looks, at each read, for those events it has not seen: the
ones that may have committed after its last read. Their transactions began at most
`SEALED_AFTER` seconds before they committed, so they took their ids after the last
read's clock less `SEALED_AFTER`; every id a read at least `2 * SEALED_AFTER` earlier
saw is below them. Events are purged oldest first (never the newest), so none after
an event still there is gone.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from sqlalchemy import Connection, func, select

from oprun.store import schema as t

SEALED_AFTER = 120.0
"""Seconds after which what a transaction wrote is visible: no transaction that ends
a task or an operation, or deletes one, stays open this long."""
DELETED = "operation.deleted"
KEEP_SECONDS = 3600.0
"""How long a process remembers the newest event id each read saw."""
EVERY = 5.0
"""Seconds between two reads' newest event ids it remembers (the others it forgets)."""

_ev = t.events.c


class DeletionWatch:
    """The newest event id each read of one process saw, to bound the events to look at."""

    def __init__(self) -> None:
        self._newest: list[tuple[float, int]] = []
        """(a read's clock, the newest event id it saw), oldest first."""

    def since(
        self, conn: Connection, project_id: str, last_read: float, read_at: float
    ) -> set[int] | None:
        """The project's deletion events a read at `last_read` may not have seen, and more.

        `read_at` is this read's clock: the newest event id it sees is remembered.
        None: one cannot tell (events that old are purged, or none is old enough yet).
        """
        oldest, newest = conn.execute(select(func.min(_ev.seq), func.max(_ev.seq))).one()
        if not self._newest or self._newest[-1][0] <= read_at - EVERY:
            self._newest.append((read_at, int(newest or 0)))
        while len(self._newest) > 1 and self._newest[1][0] < read_at - KEEP_SECONDS:
            del self._newest[0]
        before = last_read - 2 * SEALED_AFTER
        earlier = bisect_right(self._newest, (before, math.inf))
        # Else an event that began `SEALED_AFTER` earlier still took its id before.
        floor = (
            self._newest[earlier - 1][1]
            if earlier
            else _began_by(conn, before - SEALED_AFTER, oldest, newest)
        )
        if floor is None:
            return None
        if oldest is not None and oldest > max(floor, 1):  # ids start at 1
            return None
        return set(
            conn.execute(
                select(_ev.seq).where(
                    _ev.project_id == project_id, _ev.seq > floor, _ev.type == DELETED
                )
            ).scalars()
        )


def _began_by(conn: Connection, at: float, oldest: int | None, newest: int | None) -> int | None:
    """The id of an event that began by `at`, among the newest such (None: none did).

    Looks back from the newest event in steps that double, down to the oldest, each
    one index lookup, so it reads a few rows however many events came since.
    """
    step, probe = 256, newest
    while probe is not None:
        found = conn.execute(
            select(_ev.seq, _ev.at).where(_ev.seq <= probe).order_by(_ev.seq.desc()).limit(1)
        ).first()
        if found is None:
            return None
        if found.at <= at:
            return int(found.seq)
        if oldest is None or found.seq <= oldest:
            return None
        probe, step = max(int(found.seq) - step, oldest), 2 * step
    return None
