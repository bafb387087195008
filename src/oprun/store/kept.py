"""Where a project's count limit falls, found from what changed since the last round.

The boundary of a count limit `keep` is the oldest of the project's `keep` newest
finished operations, in the order (`ended_at`, `id`). Walking to it reads `keep`
index entries; each process walks once per project (and again whenever it cannot be
sure), then follows the boundary from what changed:

- the operations that finished since: those whose `ended_at` is at most
  `SEALED_AFTER` seconds older than the last round's clock, less the ones that round
  saw (an `ended_at` is its transaction's start, and no transaction that ends an
  operation stays open that long, so an earlier one was visible to the last round);
- its *ladder*: the oldest kept operations, from the boundary up, `LADDER` of them
  at least. With `a` operations finished since, the new kept ones are the newest
  `keep` of the old kept ones and the new ones, so the new boundary is the `a + 1`-th
  oldest of the ladder and the new ones. The ladder is refilled from the index above
  its top.

Operations leave in three ways. A purge by count (this process's or another's)
deletes only operations older than a boundary it found, never one the new boundary
keeps. A purge by age deletes every operation older than its limit, which may reach
kept ones: each round counts the ladder's operations in the index (a range of at
most a ladder's length) and walks again if some are gone. A user deletes any finished
operation, and that could move the boundary back: each round looks for the
`operation.deleted` events it has not seen (`oprun.store.deletions`) and walks again
if there is one. A change of
`keep`, the clock going back, or too many new operations for the ladder: a walk too.
Every round reads in one snapshot (REPEATABLE READ on PostgreSQL; a SQLite read
transaction is one).

A purge that finds nothing before the boundary is noted (`found_clear`): until an
operation finishes (the only way one can come to sort before it), the next rounds'
purges know there is nothing to delete without a query (`clear_before`), so an idle
project at its limit costs a round what a project under it does.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select, tuple_

from oprun.domain.retention import Boundary
from oprun.store import schema as t
from oprun.store.deletions import SEALED_AFTER, DeletionWatch

LADDER = 1024
"""The fewest kept operations a process remembers above a project's boundary."""

_op = t.operations.c


@dataclass
class _Kept:
    """What one process knows of a project's kept operations, as of its last read."""

    keep: int
    read_at: float
    """The store's clock at that read."""
    ladder: list[Boundary]
    """The oldest kept operations, oldest first, with none missing between them (empty:
    fewer than `keep` finished operations exist)."""
    fewer: int
    """With an empty ladder: at least as many finished operations as exist."""
    recent: set[str] = field(default_factory=set)
    """Operations seen that ended at most `SEALED_AFTER` before `read_at`."""
    deletions: set[int] = field(default_factory=set)
    """`operation.deleted` events seen that a later read might see committed late."""
    clear_below: bool = False
    """Whether no finished operation sorts before the ladder's first, as of `read_at`."""


class KeptBoundaries:
    """Each project's count-limit boundary, followed from round to round by one process."""

    def __init__(self) -> None:
        self._projects: dict[str, _Kept] = {}
        self._deletions = DeletionWatch()
        self._lock = threading.Lock()

    def oldest_kept(
        self, conn: Connection, now: Callable[[Connection], float], project_id: str, keep: int
    ) -> Boundary | None:
        """The oldest of the project's `keep` newest finished operations (None: fewer).

        `conn` is a snapshot (one read transaction); `now` reads the store's clock on it.
        """
        with self._lock:
            read_at = now(conn)
            last = self._projects.get(project_id)
            kept = None
            if last is not None and last.keep == keep and last.read_at <= read_at:
                deletions = self._deletions.since(conn, project_id, last.read_at, read_at)
                if deletions is not None and not deletions - last.deletions:
                    kept = _follow(conn, project_id, last, read_at, deletions)
            if kept is None:
                deletions = self._deletions.since(conn, project_id, read_at, read_at)
                kept = _walk(conn, project_id, keep, read_at, deletions or set())
            self._projects[project_id] = kept
            return kept.ladder[0] if kept.ladder else None

    def clear_before(self, project_id: str, before: Boundary) -> tuple[bool, object]:
        """Whether this process knows that no finished operation sorts before `before`.

        It knows when a read found none before its boundary and no operation finished
        since: operations leave (purges, deletions), but only one that finishes can
        sort before the boundary, and each round reads those. So the purge of an idle
        project at its limit needs no query, round after round. Also returns a token
        for `found_clear`.
        """
        with self._lock:
            kept = self._projects.get(project_id)
            clear = (
                kept is not None
                and kept.clear_below
                and bool(kept.ladder)
                and before <= kept.ladder[0]
            )
            return clear, kept

    def found_clear(self, project_id: str, before: Boundary, token: object) -> None:
        """Note that a read found no finished operation of the project before `before`.

        `token` is what `clear_before` returned before that read: the note holds only
        if no round followed the boundary since (the read saw all that round saw).
        """
        with self._lock:
            kept = self._projects.get(project_id)
            if kept is not None and kept is token and kept.ladder and before >= kept.ladder[0]:
                kept.clear_below = True


def _follow(
    conn: Connection, project_id: str, last: _Kept, read_at: float, deletions: set[int]
) -> _Kept | None:
    """The kept operations now, from `last` and what changed since (None: walk again)."""
    seen = _finished_since(conn, project_id, last.read_at - SEALED_AFTER)
    new = sorted(b for b in seen if b.id not in last.recent)
    recent = {b.id for b in seen if b.ended_at >= read_at - SEALED_AFTER}
    if not last.ladder:
        fewer = last.fewer + len(new)
        if fewer >= last.keep:
            return None
        return _Kept(last.keep, read_at, [], fewer, recent, deletions)
    if len(new) >= len(last.ladder):
        return None  # the new boundary may lie above what the ladder holds
    top = last.ladder[-1]
    merged = sorted([*last.ladder, *new])
    kept = merged[len(new) :]
    ladder = kept[: bisect_right(kept, top)]  # the kept ones up to the old top: none missing
    if len(ladder) < LADDER // 2 or len(ladder) < len(new):
        size = max(LADDER, 2 * len(new))
        above = _after(conn, project_id, top, size)
        ladder = sorted({*ladder, *above, *(b for b in kept if b > top)})
        if len(above) == size:  # the index has more: none missing only up to its last
            ladder = ladder[: bisect_right(ladder, above[-1])]
    if _between(conn, project_id, ladder[0], ladder[-1]) != len(ladder):
        return None  # some the ladder holds are gone (a purge by age reached them): walk
    return _Kept(last.keep, read_at, ladder, 0, recent, deletions, last.clear_below and not new)


def _between(conn: Connection, project_id: str, low: Boundary, high: Boundary) -> int:
    """How many of the project's finished operations lie from `low` to `high`, both in."""
    key = tuple_(_op.ended_at, _op.id)
    return int(
        conn.execute(
            select(func.count()).where(
                _op.project_id == project_id,
                _op.ended_at.isnot(None),
                key >= tuple_(low.ended_at, low.id),
                key <= tuple_(high.ended_at, high.id),
            )
        ).scalar_one()
    )


def _walk(
    conn: Connection, project_id: str, keep: int, read_at: float, deletions: set[int]
) -> _Kept:
    """The kept operations now, walked to from the newest."""
    recent = {
        b.id for b in _finished_since(conn, project_id, read_at - SEALED_AFTER)
    }  # seen by this snapshot, as the walk is
    rows = conn.execute(
        select(_op.ended_at, _op.id)
        .where(_op.project_id == project_id, _op.ended_at.isnot(None))
        .order_by(_op.ended_at.desc(), _op.id.desc())
        .offset(keep - 1)
        .limit(2)  # the second: one sorts before the boundary
    ).all()
    row = rows[0] if rows else None
    if row is None:
        fewer = conn.execute(
            select(func.count()).where(_op.project_id == project_id, _op.ended_at.isnot(None))
        ).scalar_one()
        return _Kept(keep, read_at, [], int(fewer), recent, deletions)
    boundary = Boundary(float(row[0]), row[1])
    ladder = [boundary, *_after(conn, project_id, boundary, LADDER - 1)]
    return _Kept(keep, read_at, ladder, 0, recent, deletions, len(rows) == 1)


def _finished_since(conn: Connection, project_id: str, since: float) -> list[Boundary]:
    rows = conn.execute(
        select(_op.ended_at, _op.id).where(
            _op.project_id == project_id, _op.ended_at.isnot(None), _op.ended_at >= since
        )
    )
    return [Boundary(float(at), op_id) for at, op_id in rows]


def _after(conn: Connection, project_id: str, after: Boundary, limit: int) -> list[Boundary]:
    """Up to `limit` of the project's finished operations just after `after`, oldest first."""
    rows = conn.execute(
        select(_op.ended_at, _op.id)
        .where(
            _op.project_id == project_id,
            _op.ended_at.isnot(None),
            tuple_(_op.ended_at, _op.id) > tuple_(after.ended_at, after.id),
        )
        .order_by(_op.ended_at, _op.id)
        .limit(limit)
    )
    return [Boundary(float(at), op_id) for at, op_id in rows]
