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

from sqlalchemy import Connection, func, select, text

from oprun.store import schema as t

SEALED_AFTER = 120.0
"""Seconds after which what a transaction wrote is visible: no transaction that ends
a task or an operation, or deletes one, stays open this long."""
DELETED = "operation.deleted"
_DELETED = t.EVENT_DELETED
"""Written as `ix_events_deleted`'s predicate, so that SQLite uses that partial index."""
KEEP_SECONDS = 3600.0
"""How long a process remembers the newest event id each read saw."""
EVERY = 5.0
"""Seconds between two reads' newest event ids it remembers (the others it forgets)."""

_ev = t.events.c
_ENDS = select(
    select(func.min(_ev.seq)).scalar_subquery(), select(func.max(_ev.seq)).scalar_subquery()
)
"""The oldest and newest event ids: two subqueries, as SQLite reads `min` or `max` from
the index only when it is alone in its SELECT (both in one scan the whole table)."""


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
        oldest, newest = conn.execute(_ENDS).one()
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
                select(_ev.seq).where(_ev.project_id == project_id, _ev.seq > floor, _DELETED)
            ).scalars()
        )


_PROBES = text(
    "WITH RECURSIVE probe(p, step) AS ("
    " SELECT CAST(:newest AS BIGINT), CAST(256 AS BIGINT)"
    " UNION ALL SELECT CASE WHEN p - step > :oldest THEN p - step ELSE :oldest END, step * 2"
    " FROM probe WHERE p > :oldest)"
    " SELECT e.seq, e.at FROM probe"
    " JOIN events e ON e.seq = (SELECT max(seq) FROM events WHERE seq <= probe.p)"
)
"""The newest event at or below each probe, the probes going back from the newest event in
steps that double, down to the oldest: each step one index lookup, in one statement."""


def _began_by(conn: Connection, at: float, oldest: int | None, newest: int | None) -> int | None:
    """The id of an event that began by `at`, among the newest such (None: none did).

    Looks back from the newest event in steps that double, down to the oldest (`_PROBES`),
    so it reads a few dozen index entries however many events came since.
    """
    if oldest is None or newest is None:
        return None
    found = {
        (int(seq), float(began))
        for seq, began in conn.execute(_PROBES, {"newest": newest, "oldest": oldest})
    }
    for seq, began in sorted(found, reverse=True):
        if began <= at:
            return seq
    return None
