"""What operators watch, counted at scrape time from indexes, never from a scan of operations.

`server_stats` reads, for every queue of every project: its unfinished operations
and tasks by status, and how long its oldest ready task has waited; and workers
by status. Each count reads only the rows of unfinished work, through an index
that holds (or leads to) just those rows, so a scrape costs what is in flight, not
what the server ever ran. `pool_stats` reads the connection pools, without I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select, text
from sqlalchemy.pool import Pool

from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase
from oprun.store.calls import DatabaseCalls

UNFINISHED = (OS.QUEUED, OS.SCHEDULED, OS.RUNNING, OS.CANCELING)
"""The statuses counted: finished operations are the bulk of the table, and unbounded."""
_QUEUED_TASK = text("status = 'QUEUED'")
"""A waiting task, written as a literal beside `TASK_ACTIVE` (SQLite matches a partial
index's WHERE by its terms)."""


@dataclass(frozen=True)
class QueueGauges:
    """One queue now: its unfinished operations and tasks by status, and its oldest wait."""

    project_id: str
    queue: str
    operations: dict[str, int] = field(default_factory=dict)
    """Unfinished operations by status (every status of `UNFINISHED`, zeros included)."""
    tasks: dict[str, int] = field(default_factory=dict)
    """Unfinished tasks by status (every status of `UNFINISHED`, zeros included)."""
    oldest_waiting_seconds: float = 0.0
    """How long the task that waits longest for a worker has been ready (0: none waits)."""


@dataclass(frozen=True)
class ServerStats:
    """Every queue of every project, and workers by project and status, at one instant."""

    queues: list[QueueGauges]
    workers: dict[tuple[str, str], int]
    """(project id, status) -> workers; every status for every project that has workers."""
    at: float
    """The store's clock when this was counted."""


@dataclass(frozen=True)
class PoolStats:
    """One connection pool of the store."""

    name: str
    capacity: int
    """How many connections it may open (its size plus its overflow)."""
    in_use: int
    idle: int


def _ready_since(conn: Connection, queue_ids: list[str], now: float) -> dict[str, float]:
    """Queue id -> since when its longest-waiting ready task has been ready (none: absent).

    The first QUEUED entry of each queue's range of `ix_tasks_queue_active_available` has
    the lowest `available_at`: the queue has a ready task if and only if it is not later
    than `now`, and then that task waited longest. One index lookup per queue.
    """
    tasks, queues = t.tasks.c, t.queues.c
    first = (
        select(tasks.available_at)
        .where(tasks.queue_id == queues.id, t.TASK_ACTIVE, _QUEUED_TASK)
        .order_by(tasks.available_at)
        .limit(1)
        .scalar_subquery()
    )
    found = conn.execute(select(queues.id, first).where(queues.id.in_(queue_ids)))
    return {qid: float(since) for qid, since in found if since is not None and since <= now}


def _pool(name: str, pool: Pool) -> PoolStats:
    # QueuePool has these; another pool class (a test's StaticPool) shows zeros.
    size = int(getattr(pool, "size", lambda: 0)())
    overflow = int(getattr(pool, "_max_overflow", 0))
    return PoolStats(
        name=name,
        capacity=size + max(overflow, 0),
        in_use=int(getattr(pool, "checkedout", lambda: 0)()),
        idle=int(getattr(pool, "checkedin", lambda: 0)()),
    )


class StatsQueries(StoreBase):
    """Gauges for `/metrics`."""

    def server_stats(self) -> ServerStats:
        """Unfinished work per queue, the oldest wait per queue, workers by status.

        Each figure is read from index entries, which carry all it needs: tasks are
        counted from the partial index `ix_tasks_queue_active_available` (unfinished
        tasks), and a queue's longest-waiting task is the first QUEUED entry of its range
        there (one lookup per queue); operations from `ix_operations_project_status_queue`,
        one range per project and unfinished status, whose entries carry their queue.
        Queues, projects and workers are small tables (a worker row per agent start).
        """
        tasks, ops = t.tasks.c, t.operations.c
        unfinished = [s.value for s in UNFINISHED]
        with self.read() as conn:
            now = self._db_now(conn)
            queues = conn.execute(
                select(t.queues.c.id, t.queues.c.project_id, t.queues.c.name).order_by(
                    t.queues.c.project_id, t.queues.c.name
                )
            ).all()
            projects = sorted({q.project_id for q in queues})
            task_counts: dict[str, dict[str, int]] = defaultdict(dict)
            for qid, status, n in conn.execute(
                select(tasks.queue_id, tasks.status, func.count())
                .where(t.TASK_ACTIVE)
                .group_by(tasks.queue_id, tasks.status)
            ).all():
                task_counts[qid][status] = int(n)
            waiting = [q.id for q in queues if task_counts[q.id].get(OS.QUEUED.value)]
            ready_since = _ready_since(conn, waiting, now)
            op_counts: dict[str, dict[str, int]] = defaultdict(dict)
            if projects:
                for qid, status, n in conn.execute(
                    select(ops.queue_id, ops.status, func.count())
                    .where(ops.project_id.in_(projects), ops.status.in_(unfinished))
                    .group_by(ops.queue_id, ops.status)
                ).all():
                    op_counts[qid][status] = int(n)
            workers: dict[tuple[str, str], int] = {}
            for pid, status, n in conn.execute(
                select(t.workers.c.project_id, t.workers.c.status, func.count()).group_by(
                    t.workers.c.project_id, t.workers.c.status
                )
            ).all():
                for each in WorkerStatus:
                    workers.setdefault((pid, each.value), 0)
                workers[pid, status] = int(n)
        return ServerStats(
            queues=[
                QueueGauges(
                    project_id=q.project_id,
                    queue=q.name,
                    operations={s: op_counts[q.id].get(s, 0) for s in unfinished},
                    tasks={s: task_counts[q.id].get(s, 0) for s in unfinished},
                    oldest_waiting_seconds=(
                        max(0.0, now - ready_since[q.id]) if q.id in ready_since else 0.0
                    ),
                )
                for q in queues
            ],
            workers=workers,
            at=now,
        )

    def database_calls(self) -> DatabaseCalls:
        """Statements and round trips this process sent the database (no I/O)."""
        return self.calls.read()

    def pool_stats(self) -> list[PoolStats]:
        """The use of each connection pool (no I/O: it answers while the database is down)."""
        return [_pool(name, engine.pool) for name, engine in self.engines.items()]
