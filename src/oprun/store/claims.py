"""Claims: a worker takes waiting tasks, each under a new lease.

Who may take what is the domain's (`oprun.domain.assignment`): this module reads
the facts under lock, asks it, and writes the attempts it allows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, case, exists, func, select, update

from oprun.domain.assignment import (
    Candidate,
    QueueLoad,
    attempt_timeout,
    choose,
    may_claim,
    room_left,
    serving_order,
    task_parameters,
)
from oprun.domain.ids import new_id
from oprun.domain.models import ActionDefinition, TaskCounts
from oprun.domain.protocol import Assignment
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.batch import BatchUpdate
from oprun.store.counters import COUNTERS
from oprun.store.notify import work_key
from oprun.store.protocol import Claimed
from oprun.store.schema import TASK_ACTIVE
from oprun.store.sessions import is_open_for, sessions_of
from oprun.store.transitions import lock_operations, settled

_CLAIM_SLACK = 16
"""Tasks a claim locks beyond what it wants, for those its worker cannot take."""


class ClaimQueries(StoreBase):
    """The claim, the hottest path of oprun."""

    def claim(
        self,
        worker_id: str,
        project_id: str,
        queue_names: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        operation_id: str | None = None,
        session_id: str | None = None,
        step_id: str | None = None,
    ) -> Claimed:
        """Take up to `limit` waiting tasks for a worker, each under a new lease.

        Queues are served in priority order, never past a queue's concurrency limit;
        a task goes only to a worker whose capabilities meet its requirements and
        that is not quarantined from its operation. With `operation_id`, only that
        operation's tasks (of `step_id` first), for the open session `session_id`.
        """
        with self.write() as tx:
            found = tx.conn.execute(
                _WORKER_AND_QUEUES,
                {"worker_id": worker_id, "project_id": project_id, "names": list(queue_names)},
            ).all()
            if not found:
                return Claimed(refused=True)
            worker = found[0]
            if not may_claim(
                WorkerStatus(worker.status), worker.last_heartbeat_at, tx.now, lease_seconds
            ):
                return Claimed(refused=True)
            queues = [row for row in found if row.queue_id is not None]
            limited = any(row.max_concurrency is not None for row in queues)
            if session_id is not None and not _session_open(
                tx, session_id, worker_id, operation_id
            ):
                return Claimed(limited=limited)
            picked, passed_over = _pick(
                tx,
                worker_id,
                project_id,
                queues,
                limit,
                worker.capabilities or {},
                operation_id=operation_id,
                step_id=step_id,
            )
            # Every waiting task of its queues that this claim could see, it took, and no
            # other worker sees one it did not: see `Claimed.exhaustive`.
            exhaustive = operation_id is None and not (limited or passed_over or worker.quarantined)
            if not picked:
                return Claimed(limited=limited, exhaustive=exhaustive)
            assignments = _assign(tx, picked, worker_id, project_id, lease_seconds, session_id)
            if assignments and worker.status == WorkerStatus.IDLE.value:
                tx.conn.execute(_WORKER_RUNNING, {"worker_id": worker_id})
            return Claimed(assignments, limited=limited, exhaustive=exhaustive)


_WORKER_AND_QUEUES = (
    select(
        t.workers.c.status,
        t.workers.c.capabilities,
        t.workers.c.last_heartbeat_at,
        exists().where(t.quarantines.c.worker_id == bindparam("worker_id")).label("quarantined"),
        t.queues.c.id.label("queue_id"),
        t.queues.c.priority,
        t.queues.c.max_concurrency,
    )
    .select_from(
        t.workers.outerjoin(
            t.queues,
            and_(
                t.queues.c.project_id == bindparam("project_id"),
                t.queues.c.name.in_(bindparam("names", expanding=True)),
            ),
        )
    )
    .where(t.workers.c.id == bindparam("worker_id"))
    .order_by(t.queues.c.priority.desc(), t.queues.c.id)
)
"""The worker, whether it is quarantined from any operation, and the queues it serves (by
priority), in one statement."""
_WORKER_RUNNING = (
    update(t.workers)
    .where(t.workers.c.id == bindparam("worker_id"), t.workers.c.status == WorkerStatus.IDLE.value)
    .values(status=WorkerStatus.RUNNING.value)
)


@lru_cache(maxsize=4)
def _pick_query(session: bool, step: bool) -> Select[Any]:
    """Waiting tasks of one queue, locked, in the order they should run.

    One queue per statement, so the claimable index hands them out in order and a
    worker serving many queues pays per queue what a worker serving one pays, not a
    sort of every queue's backlog. With `session`, only the tasks of one operation
    (`step` first); that operation is locked before, so only the tasks are locked here.
    """
    tasks, ops = t.tasks, t.operations
    quarantined = (
        select(t.quarantines.c.operation_id)
        .where(
            t.quarantines.c.operation_id == tasks.c.operation_id,
            t.quarantines.c.worker_id == bindparam("worker_id"),
        )
        .exists()
    )
    query = (
        select(
            tasks.c.id,
            tasks.c.attempts,
            tasks.c.queue_id,
            tasks.c.priority,
            tasks.c.step_id,
            tasks.c.parameters,
            tasks.c.operation_id,
            ops.c.requirements,
            ops.c.project_id,
            ops.c.status,
            ops.c.started_at,
            ops.c.ended_at,
            ops.c.exit_reason,
            ops.c.deadline_at,
            ops.c.parameters.label("operation_parameters"),
            ops.c.action_version_id,
            *(getattr(ops.c, name) for name in COUNTERS),
        )
        .select_from(tasks.join(ops, ops.c.id == tasks.c.operation_id))
        .where(
            tasks.c.status == OS.QUEUED.value,
            tasks.c.queue_id == bindparam("queue_id"),
            tasks.c.available_at <= bindparam("now"),
            ~quarantined,
        )
    )
    order: list[Any] = [tasks.c.priority.desc(), tasks.c.id]
    # Lock order everywhere: operations, then tasks, then session actions. A
    # claim skips tasks whose operation another writer holds (being canceled,
    # say); a session's claim for more of its own operation waits for it
    # instead, or a report of that operation would end the session early.
    locked: list[Any] = [ops, tasks]
    if session:
        locked = [tasks]
        query = query.where(tasks.c.operation_id == bindparam("operation_id"))
        if step:
            order.insert(0, case((tasks.c.step_id == bindparam("step_id"), 0), else_=1))
    return (
        query.order_by(*order)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True, of=locked)
    )


def _session_open(tx: Tx, session_id: str, worker_id: str, operation_id: str | None) -> bool:
    """Whether `session_id` is the worker's, still open, and (if given) for `operation_id`."""
    session: Any = sessions_of(tx, [session_id]).get(session_id)
    return is_open_for(session, worker_id) and (
        operation_id is None or session.operation_id == operation_id
    )


def _pick(
    tx: Tx,
    worker_id: str,
    project_id: str,
    queues: Sequence[Any],
    limit: int,
    capabilities: dict[str, Any],
    *,
    operation_id: str | None,
    step_id: str | None,
) -> tuple[list[Any], bool]:
    """Choose and lock the tasks a claim takes (with their operations), in run order.

    Also whether it passed over a task it saw (requirements, a queue's limit).
    """
    conn = tx.conn
    busy = _busy(tx, [q.queue_id for q in queues if q.max_concurrency is not None])
    loads = [QueueLoad(q.queue_id, q.priority, q.max_concurrency, busy[q.queue_id]) for q in queues]
    room = room_left(loads)
    session = operation_id is not None
    query = _pick_query(session, step_id is not None)
    if operation_id is not None:
        lock_operations(tx, [operation_id])
    picked: list[Any] = []
    passed_over = False
    for queue_ids in serving_order(loads):
        want = limit - len(picked)
        if want <= 0:
            break
        # A few more than wanted, for tasks this worker cannot take (requirements,
        # concurrency limits); they stay locked only until this transaction ends.
        params = {
            "worker_id": worker_id,
            "now": tx.now,
            "limit": want + _CLAIM_SLACK,
            "operation_id": operation_id,
            "step_id": step_id,
        }
        rows: list[Any] = []
        for queue_id in queue_ids:
            rows += conn.execute(query, {**params, "queue_id": queue_id}).all()
        locked = len(rows)
        if len(queue_ids) > 1:
            first = (lambda r: r.step_id != step_id) if step_id is not None else (lambda r: 0)
            rows.sort(key=lambda r: (first(r), -r.priority, r.id))
            rows = rows[: want + _CLAIM_SLACK]
        by_id = {row.id: row for row in rows}
        taken, room = choose(
            (Candidate(row.id, row.queue_id, row.requirements) for row in rows),
            capabilities,
            room,
            want,
        )
        passed_over = passed_over or locked > len(taken)
        if taken and locked > len(taken):
            # Claims parked meanwhile skipped the rows locked here and went back to
            # sleep: once this commits, they look again. A claim that takes nothing
            # wakes nobody, so claims never wake each other in a loop.
            tx.keys.add(work_key(project_id))
        picked += [by_id[task_id] for task_id in taken]
    return picked, passed_over


def _busy(tx: Tx, limited: list[str]) -> dict[str, int]:
    """Tasks holding a worker in each concurrency-limited queue, those queues locked."""
    if not limited:
        return defaultdict(int)
    conn = tx.conn
    # Claims on a limited queue take turns, so two cannot both see the last free place.
    conn.execute(
        select(t.queues.c.id)
        .where(t.queues.c.id.in_(limited))
        .order_by(t.queues.c.id)
        .with_for_update()
    ).all()
    busy = defaultdict(int)
    for queue_id, count in conn.execute(
        select(t.tasks.c.queue_id, func.count())
        .where(
            t.tasks.c.queue_id.in_(limited),
            TASK_ACTIVE,
            t.tasks.c.status != OS.QUEUED.value,
        )
        .group_by(t.tasks.c.queue_id)
    ):
        busy[queue_id] = count
    return busy


_TASK_CLAIMED = BatchUpdate(
    t.tasks, match=("id",), write=("status", "updated_at"), add=("attempts",)
)
"""A claimed task: SCHEDULED, its attempt counted (it was QUEUED and locked by the pick)."""
_OPERATION_CLAIMED = BatchUpdate(
    t.operations,
    match=("id",),
    write=("worker_id", "status", "updated_at", "started_at", "ended_at", "exit_reason"),
    add=("attempts", "n_queued", "n_running"),
)
"""A claimed operation: its attempt, worker, counters and settled status in one row write."""
_DEFINITIONS = select(t.action_versions.c.id, t.action_versions.c.definition).where(
    t.action_versions.c.id.in_(bindparam("ids", expanding=True))
)
_definitions: dict[str, ActionDefinition] = {}
"""Action versions never change: each is parsed once per process."""
_MAX_DEFINITIONS = 4096


def _definitions_of(tx: Tx, version_ids: set[str]) -> dict[str, ActionDefinition]:
    """The definitions of action versions, from this process's cache or the database."""
    missing = [v for v in version_ids if v not in _definitions]
    if missing:
        if len(_definitions) + len(missing) > _MAX_DEFINITIONS:
            _definitions.clear()
        for row in tx.conn.execute(_DEFINITIONS, {"ids": missing}):
            _definitions[row.id] = ActionDefinition.model_validate(row.definition)
    return {v: _definitions[v] for v in version_ids}


def _assign(
    tx: Tx,
    picked: list[Any],
    worker_id: str,
    project_id: str,
    lease_seconds: float,
    session_id: str | None,
) -> list[Assignment]:
    """Start an attempt at each picked task, under a lease, and say what to run.

    Each task gets a session of its own, unless the claim asks for more work of
    the open session `session_id`. Each operation's row is written once: its
    attempt, worker, counters and status (settled from the counters read under lock).
    """
    # The pick locked each task while QUEUED: every one is claimed, its attempt the next.
    claimed = picked
    attempts = {row.id: row.attempts + 1 for row in claimed}
    tx.later(
        _TASK_CLAIMED,
        [
            {
                "b_id": row.id,
                "v_status": OS.SCHEDULED.value,
                "v_updated_at": tx.now,
                "d_attempts": 1,
            }
            for row in claimed
        ],
    )
    definitions = _definitions_of(tx, {row.action_version_id for row in claimed})
    taken: dict[str, int] = defaultdict(int)
    ops: dict[str, Any] = {}
    sessions, actions, assignments = [], [], []
    for task in claimed:
        definition = definitions[task.action_version_id]
        attempt = attempts[task.id]
        sa_id = new_id("session_action")
        task_session = session_id
        if task_session is None:
            task_session = new_id("session")
            sessions.append(
                {
                    "id": task_session,
                    "project_id": project_id,
                    "operation_id": task.operation_id,
                    "worker_id": worker_id,
                    "created_at": tx.now,
                    "ended_at": None,
                }
            )
        actions.append(
            {
                "id": sa_id,
                "session_id": task_session,
                "project_id": project_id,
                "operation_id": task.operation_id,
                "task_id": task.id,
                "worker_id": worker_id,
                "status": SAS.ASSIGNED.value,
                "lease_epoch": attempt,
                "lease_expires_at": tx.now + lease_seconds,
                "definition": {
                    "taskRun": {
                        "taskId": task.id,
                        "stepId": task.step_id,
                        "parameters": task_parameters(definition, task.parameters),
                    }
                },
                "created_at": tx.now,
            }
        )
        taken[task.operation_id] += 1
        ops.setdefault(task.operation_id, task)
        tx.history(task.id, OS.SCHEDULED.value, f"claimed by {worker_id}")
        tx.history(sa_id, SAS.ASSIGNED.value, f"assigned to {worker_id}")
        assignments.append(
            Assignment(
                session_action_id=sa_id,
                lease_epoch=attempt,
                lease_seconds=lease_seconds,
                operation_id=task.operation_id,
                task_id=task.id,
                action=definition,
                parameters=task.parameters,
                attempt=attempt,
                timeout=attempt_timeout(definition.timeout, task.deadline_at, tx.now),
                session_id=task_session,
                step_id=task.step_id,
                operation_parameters=task.operation_parameters,
            )
        )
    # Nothing in the claim reads these back: on PostgreSQL they go with its history,
    # events and NOTIFY in the one statement that ends it.
    tx.later(t.sessions, sessions)
    tx.later(t.session_actions, actions)
    tx.later(
        _OPERATION_CLAIMED,
        [_claimed_operation(tx, ops[op_id], n, worker_id) for op_id, n in sorted(taken.items())],
    )
    return assignments


def _claimed_operation(tx: Tx, op: Any, taken: int, worker_id: str) -> dict[str, Any]:
    """The row write of an operation `taken` of whose tasks were just claimed.

    Its counters and status were read under lock with the tasks. A task starts
    RUNNING only through a report, which settles its operation to RUNNING at once,
    so an operation has a RUNNING or CANCELING task exactly when it is RUNNING or
    CANCELING itself (`settle` would look; here the status says it).
    """
    counts = TaskCounts(
        queued=op.n_queued - taken,
        running=op.n_running + taken,
        succeeded=op.n_succeeded,
        failed=op.n_failed,
        canceled=op.n_canceled,
    )
    status = OS(op.status)
    any_running = status in (OS.RUNNING, OS.CANCELING)
    row = {
        "id": op.operation_id,
        "project_id": op.project_id,
        "status": op.status,
        "started_at": op.started_at,
        "ended_at": op.ended_at,
        "exit_reason": op.exit_reason,
    }
    values = settled(tx, row, counts, any_running) or {
        "status": op.status,
        "updated_at": tx.now,
        "started_at": op.started_at,
        "ended_at": op.ended_at,
        "exit_reason": op.exit_reason,
    }
    return {
        "b_id": op.operation_id,
        "v_worker_id": worker_id,
        "d_attempts": 1,
        "d_n_queued": -taken,
        "d_n_running": taken,
        **{f"v_{k}": v for k, v in values.items()},
    }
