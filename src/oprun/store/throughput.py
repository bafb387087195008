"""Each queue's last hour of finished tasks, per minute, without recounting the whole hour.

A queue's throughput has one bucket per minute of the last hour: bucket `i` counts the
tasks that ended (reached SUCCEEDED, FAILED or CANCELED) in
`[start + 60 i, start + 60 (i + 1))`, where `start = now - 3600`. A task's end time
(its `updated_at`) never moves once it ended, since an ended task never changes
status again (a retry is a new attempt of a task that has not ended). So the ends
older than `SEALED_AFTER` seconds, longer than any write transaction takes to commit,
are final: each process keeps those (one float per task ended in the last hour),
fetching only the ones that became final since its last count, and counts just the
last `SEALED_AFTER` seconds from the index, as every count did before.

Tasks leave with their operations, and a count must not keep counting them: a
process forgets what it kept of a project's queues when a user deleted one of its
operations since its last count (`oprun.store.deletions`), and when a purge may have
reached into the window, which it tells from the project's oldest finished operation:
purges go oldest first, so while one that ended before the window is there, none
that ended within it has gone. So counts equal a count of the whole hour from the
index, in every process.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from oprun.store import schema as t
from oprun.store.deletions import SEALED_AFTER, DeletionWatch

MINUTES = 60
"""How many one-minute buckets a queue's throughput covers (the last hour)."""
WINDOW = 60.0 * MINUTES
ENDED = ("SUCCEEDED", "FAILED", "CANCELED")

_op = t.operations.c


def minute_of(end: float, start: float) -> float:
    """Where `end` falls from `start`, in minutes: the same arithmetic as the SQL count."""
    return (end - start) / 60


@dataclass
class _Ends:
    """One queue's final end times by status: every one in `[since, until)`, sorted."""

    project_id: str
    since: float
    until: float
    times: dict[str, array[float]] = field(default_factory=dict)

    def add(self, status: str, ends: Iterable[float]) -> None:
        self.times.setdefault(status, array("d")).extend(sorted(ends))

    def forget_before(self, start: float) -> None:
        for times in self.times.values():
            del times[: bisect_left(times, start)]
        self.since = start


@dataclass(frozen=True)
class Counted:
    """One queue's tasks ended in the window: by status, and by minute."""

    by_status: dict[str, int]
    buckets: list[int]


class FinalEnds:
    """The final end times of recently ended tasks, per queue, kept by one process."""

    def __init__(self) -> None:
        self._queues: dict[str, _Ends] = {}
        self._projects: dict[str, tuple[float, set[int]]] = {}
        """Project -> its last count's clock and the deletion events that count saw."""
        self._deletions = DeletionWatch()
        self._lock = threading.Lock()

    def count(
        self, conn: Connection, project_id: str, queue_ids: Sequence[str], now: float
    ) -> dict[str, Counted]:
        """Each queue's tasks ended in `[now - WINDOW, now - SEALED_AFTER)`, by status and minute.

        `queue_ids` are queues of project `project_id`. Fetches, through
        `ix_tasks_queue_ended`, only the ends that became final since this process last
        counted the queue (the whole window the first time, or when some may be gone).
        Held under a lock: concurrent counts would fetch the same rows.
        """
        start, until = now - WINDOW, now - SEALED_AFTER
        with self._lock:
            for qid, ends in list(self._queues.items()):
                if ends.until < start:
                    del self._queues[qid]  # not counted for an hour: refetching costs as much
            if self._some_gone(conn, project_id, now, start):  # every page of its queues
                for qid, ends in list(self._queues.items()):
                    if ends.project_id == project_id:
                        del self._queues[qid]
            ready: dict[str, _Ends] = {}
            fetch: dict[float, list[str]] = {}
            for qid in queue_ids:
                kept = self._queues.get(qid)
                # New, or the clock went back past what was forgotten: the whole window.
                if kept is None or kept.since > start:
                    kept = _Ends(project_id, start, start)
                ends = kept
                if ends.until < until:
                    fetch.setdefault(ends.until, []).append(qid)
                ready[qid] = ends
            for since, qids in fetch.items():
                found: dict[tuple[str, str], list[float]] = {}
                for qid, status, end in _ended(conn, qids, since, until):
                    found.setdefault((qid, status), []).append(end)
                for qid in qids:
                    ends = ready[qid]
                    for status in ENDED:
                        ends.add(status, found.get((qid, status), ()))
                    ends.until = until
            counted = {}
            for qid, ends in ready.items():
                ends.forget_before(start)
                self._queues[qid] = ends
                counted[qid] = _by_minute(ends, start, until)
            return counted

    def _some_gone(self, conn: Connection, project_id: str, now: float, start: float) -> bool:
        """Whether tasks the project's kept ends count may have been deleted since."""
        last = self._projects.get(project_id)
        last_read = now if last is None or last[0] > now else last[0]
        deletions = self._deletions.since(conn, project_id, last_read, now)
        self._projects[project_id] = (now, deletions or set())
        if last is None or deletions is None or deletions - last[1]:
            return True
        oldest = conn.execute(
            select(func.min(_op.ended_at)).where(
                _op.project_id == project_id, _op.ended_at.isnot(None)
            )
        ).scalar()
        return oldest is None or oldest >= start


def _ended(
    conn: Connection, queue_ids: list[str], since: float, until: float
) -> Iterable[tuple[str, str, float]]:
    tasks = t.tasks.c
    rows = conn.execute(
        select(tasks.queue_id, tasks.status, tasks.updated_at).where(
            tasks.queue_id.in_(queue_ids),
            t.TASK_ENDED,
            tasks.updated_at >= since,
            tasks.updated_at < until,
        )
    )
    return ((qid, status, float(end)) for qid, status, end in rows)


def _by_minute(ends: _Ends, start: float, until: float) -> Counted:
    """The ends in `[start, until)`, by status and by minute from `start`."""
    by_status: dict[str, int] = {}
    buckets = [0] * MINUTES
    for status, times in ends.times.items():
        lo, hi = bisect_left(times, start), bisect_left(times, until)
        by_status[status] = hi - lo
        edges = [lo] + [_first_in(times, minute, start, lo, hi) for minute in range(1, MINUTES)]
        edges.append(hi)
        for minute in range(MINUTES):
            buckets[minute] += edges[minute + 1] - edges[minute]
    return Counted(by_status, buckets)


def _first_in(times: array[float], minute: int, start: float, lo: int, hi: int) -> int:
    """The first index in `times[lo:hi]` whose end falls in `minute` or later."""
    at = min(max(bisect_left(times, start + 60 * minute, lo, hi), lo), hi)
    # start + 60 * minute and the SQL's (end - start) / 60 may round apart by an ulp:
    # step to the exact edge of `minute_of`, a step or two at most.
    while at > lo and minute_of(times[at - 1], start) >= minute:
        at -= 1
    while at < hi and minute_of(times[at], start) < minute:
        at += 1
    return at
