"""Claims: a worker takes waiting tasks, each under a new lease.

Who may take what is the domain's (`oprun.domain.assignment`): this module reads
the facts under lock, asks it, and writes the attempts it allows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update

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
from oprun.domain.models import ActionDefinition
from oprun.domain.protocol import Assignment
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.counters import bump
from oprun.store.notify import work_key
from oprun.store.schema import TASK_ACTIVE
from oprun.store.sessions import is_open_for, sessions_of
from oprun.store.transitions import lock_operations, settle

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
    ) -> list[Assignment]:
        """Take up to `limit` waiting tasks for a worker, each under a new lease.

        Queues are served in priority order, never past a queue's concurrency limit;
        a task goes only to a worker whose capabilities meet its requirements and
        that is not quarantined from its operation. With `operation_id`, only that
        operation's tasks (of `step_id` first), for the open session `session_id`.
        """
        with self.write() as tx:
            worker = tx.conn.execute(
                select(
                    t.workers.c.status, t.workers.c.capabilities, t.workers.c.last_heartbeat_at
                ).where(t.workers.c.id == worker_id)
            ).first()
            if worker is None or not may_claim(
                WorkerStatus(worker.status), worker.last_heartbeat_at, tx.now, lease_seconds
            ):
                return []
            if session_id is not None and not _session_open(
                tx, session_id, worker_id, operation_id
            ):
                return []
            picked = _pick(
                tx,
                worker_id,
                project_id,
                queue_names,
                limit,
                worker.capabilities or {},
                operation_id=operation_id,
                step_id=step_id,
            )
            if not picked:
                return []
            return _assign(tx, picked, worker_id, project_id, lease_seconds, session_id)


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
    queue_names: Sequence[str],
    limit: int,
    capabilities: dict[str, Any],
    *,
    operation_id: str | None,
    step_id: str | None,
) -> list[str]:
    """Choose and lock the tasks a claim takes, in the order they should run."""
    conn = tx.conn
    queues = conn.execute(
        select(t.queues.c.id, t.queues.c.priority, t.queues.c.max_concurrency)
        .where(t.queues.c.project_id == project_id, t.queues.c.name.in_(queue_names))
        .order_by(t.queues.c.priority.desc(), t.queues.c.id)
    ).all()
    busy = _busy(tx, [q.id for q in queues if q.max_concurrency is not None])
    loads = [QueueLoad(q.id, q.priority, q.max_concurrency, busy[q.id]) for q in queues]
    room = room_left(loads)
    quarantined = (
        select(t.quarantines.c.operation_id)
        .where(
            t.quarantines.c.operation_id == t.tasks.c.operation_id,
            t.quarantines.c.worker_id == worker_id,
        )
        .exists()
    )
    picked: list[str] = []
    for queue_ids in serving_order(loads):
        want = limit - len(picked)
        if want <= 0:
            break
        query = (
            select(
                t.tasks.c.id,
                t.tasks.c.queue_id,
                t.operations.c.requirements,
            )
            .select_from(t.tasks.join(t.operations, t.operations.c.id == t.tasks.c.operation_id))
            .where(
                t.tasks.c.status == OS.QUEUED.value,
                t.tasks.c.queue_id.in_(queue_ids),
                t.tasks.c.available_at <= tx.now,
                ~quarantined,
            )
        )
        order = [t.tasks.c.priority.desc(), t.tasks.c.id]
        # Lock order everywhere: operations, then tasks, then session actions. A
        # claim skips tasks whose operation another writer holds (being canceled,
        # say); a session's claim for more of its own operation waits for it
        # instead, or a report of that operation would end the session early.
        locked: list[Any] = [t.operations, t.tasks]
        if operation_id is not None:
            lock_operations(tx, [operation_id])
            locked = [t.tasks]
            query = query.where(t.tasks.c.operation_id == operation_id)
            if step_id is not None:
                order.insert(0, case((t.tasks.c.step_id == step_id, 0), else_=1))
        # A few more than wanted, for tasks this worker cannot take (requirements,
        # concurrency limits); they stay locked only until this transaction ends.
        rows = conn.execute(
            query.order_by(*order)
            .limit(want + _CLAIM_SLACK)
            .with_for_update(skip_locked=True, of=locked)
        ).all()
        taken, room = choose(
            (Candidate(row.id, row.queue_id, row.requirements) for row in rows),
            capabilities,
            room,
            want,
        )
        if taken and len(rows) > len(taken):
            # Claims parked meanwhile skipped the rows locked here and went back to
            # sleep: once this commits, they look again. A claim that takes nothing
            # wakes nobody, so claims never wake each other in a loop.
            tx.keys.add(work_key(project_id))
        picked += taken
    return picked


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


def _assign(
    tx: Tx,
    picked: list[str],
    worker_id: str,
    project_id: str,
    lease_seconds: float,
    session_id: str | None,
) -> list[Assignment]:
    """Start an attempt at each picked task, under a lease, and say what to run.

    Each task gets a session of its own, unless the claim asks for more work of
    the open session `session_id`.
    """
    conn = tx.conn
    claimed = conn.execute(
        update(t.tasks)
        .where(t.tasks.c.id.in_(picked), t.tasks.c.status == OS.QUEUED.value)
        .values(status=OS.SCHEDULED.value, attempts=t.tasks.c.attempts + 1, updated_at=tx.now)
        .returning(
            t.tasks.c.id,
            t.tasks.c.operation_id,
            t.tasks.c.step_id,
            t.tasks.c.parameters,
            t.tasks.c.attempts,
        )
    ).all()
    order = {task_id: i for i, task_id in enumerate(picked)}
    claimed = sorted(claimed, key=lambda task: order[task.id])
    op_ids = sorted({c.operation_id for c in claimed})
    ops = {
        r.id: r
        for r in conn.execute(
            select(
                t.operations.c.id,
                t.operations.c.timeout,
                t.operations.c.deadline_at,
                t.operations.c.parameters,
                t.action_versions.c.definition,
            )
            .select_from(
                t.operations.join(
                    t.action_versions,
                    t.action_versions.c.id == t.operations.c.action_version_id,
                )
            )
            .where(t.operations.c.id.in_(op_ids))
        )
    }
    deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sessions, actions, assignments = [], [], []
    definitions: dict[str, ActionDefinition] = {}
    for task in claimed:
        op = ops[task.operation_id]
        definition = definitions.get(op.id)
        if definition is None:
            definition = definitions[op.id] = ActionDefinition.model_validate(op.definition)
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
                "lease_epoch": task.attempts,
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
        deltas[task.operation_id]["n_queued"] -= 1
        deltas[task.operation_id]["n_running"] += 1
        tx.history(task.id, OS.SCHEDULED.value, f"claimed by {worker_id}")
        tx.history(sa_id, SAS.ASSIGNED.value, f"assigned to {worker_id}")
        assignments.append(
            Assignment(
                session_action_id=sa_id,
                lease_epoch=task.attempts,
                lease_seconds=lease_seconds,
                operation_id=task.operation_id,
                task_id=task.id,
                action=definition,
                parameters=task.parameters,
                attempt=task.attempts,
                timeout=attempt_timeout(definition.timeout, op.deadline_at, tx.now),
                session_id=task_session,
                step_id=task.step_id,
                operation_parameters=op.parameters,
            )
        )
    if sessions:
        conn.execute(insert(t.sessions), sessions)
    conn.execute(insert(t.session_actions), actions)
    conn.execute(
        update(t.operations)
        .where(t.operations.c.id == bindparam("oid"))
        .values(attempts=t.operations.c.attempts + 1, worker_id=worker_id, updated_at=tx.now),
        [{"oid": oid} for oid in op_ids],
    )
    bump(tx, deltas)
    conn.execute(
        update(t.workers)
        .where(t.workers.c.id == worker_id, t.workers.c.status == WorkerStatus.IDLE.value)
        .values(status=WorkerStatus.RUNNING.value)
    )
    settle(tx, op_ids)
    return assignments
