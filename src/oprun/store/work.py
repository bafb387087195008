"""Queries that move work: invoke, claim, heartbeat, report, cancel, reap, delete.

Every status change is compare-and-set: the UPDATE names the allowed source
statuses from the domain's transition table, so racing writers cannot both win.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from oprun.domain.errors import Conflict, NotFound
from oprun.domain.ids import new_id
from oprun.domain.models import Action, ActionDefinition, InvocationSource, Operation
from oprun.domain.params import tagged
from oprun.domain.protocol import Assignment, Held, Report, ReportOutcome
from oprun.domain.rollup import rollup
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.store import rows
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.counters import COUNTER_OF, bump
from oprun.store.notify import operation_key, work_key, worker_key
from oprun.store.reporting import FAST_KINDS, OP_COLUMNS, SA_COLUMNS, ReportEffects
from oprun.store.tenancy import TenancyQueries

_LIVE_SA = (SAS.ASSIGNED.value, SAS.RUNNING.value, SAS.CANCELING.value)
_SETTLE = (
    update(t.operations)
    .where(t.operations.c.id == bindparam("b_id"))
    .where(t.operations.c.status == bindparam("b_from"))
    .values(
        {
            c: bindparam(f"v_{c}")
            for c in ("status", "updated_at", "started_at", "ended_at", "exit_reason")
        }
    )
)
_REPORT_SA_COLUMNS = (
    t.session_actions.c.id,
    t.session_actions.c.lease_epoch,
    t.session_actions.c.worker_id,
    t.session_actions.c.operation_id,
    t.session_actions.c.task_id,
    t.session_actions.c.project_id,
    *(getattr(t.session_actions.c, c) for c in SA_COLUMNS),
    t.tasks.c.status.label("task_status"),
)
_REPORT_OP_COLUMNS = (
    t.operations.c.id,
    t.operations.c.project_id,
    *(getattr(t.operations.c, c) for c in OP_COLUMNS),
)


@dataclass(frozen=True)
class NewOperation:
    """A validated invocation, ready to be written."""

    project_id: str
    action: Action
    queue: str
    parameters: dict[str, Any]
    params_digest: str
    created_by: str
    source_type: InvocationSource
    source_id: str
    idempotency_key: str | None
    timeout: float | None


class WorkQueries(TenancyQueries):
    """The hot paths of oprun."""

    # -- invoke --------------------------------------------------------------------------
    def create_operations(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        """Write operations (one task each), all in one transaction.

        An item whose idempotency key is already used in its project yields the
        existing operation; the flag says whether each operation was created.
        """
        try:
            return self._create_operations(items)
        except IntegrityError:
            # A concurrent request took one of the keys between our check and insert;
            # the retry finds its operation.
            return self._create_operations(items)

    def _create_operations(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        with self.write() as tx:
            conn = tx.conn
            keys_by_project: dict[str, set[str]] = defaultdict(set)
            for item in items:
                if item.idempotency_key:
                    keys_by_project[item.project_id].add(item.idempotency_key)
            existing: dict[tuple[str, str], Any] = {}
            for project_id, keys in keys_by_project.items():
                for row in conn.execute(
                    select(t.operations).where(
                        t.operations.c.project_id == project_id,
                        t.operations.c.idempotency_key.in_(keys),
                    )
                ):
                    existing[(project_id, row.idempotency_key)] = row
            queue_ids: dict[tuple[str, str], str] = {}
            op_rows: list[dict[str, Any]] = []
            task_rows: list[dict[str, Any]] = []
            results: list[tuple[Operation, bool]] = []
            for item in items:
                key = (item.project_id, item.idempotency_key or "")
                if item.idempotency_key and key in existing:
                    results.append((rows.operation(existing[key]), False))
                    continue
                qkey = (item.project_id, item.queue)
                if qkey not in queue_ids:
                    queue_ids[qkey] = self._ensure_queue(tx, item.project_id, item.queue)
                new = self._operation_row(tx, item, queue_ids[qkey])
                op_rows.append(new)
                task_rows.append(self._task_row(tx, new, item.action.definition))
                if item.idempotency_key:
                    existing[key] = SimpleNamespace(**new)
                results.append((rows.operation(SimpleNamespace(**new)), True))
                tx.history(new["id"], OS.QUEUED.value, "created")
                tx.event(item.project_id, "operation.created", new["id"], {"status": "QUEUED"})
                tx.keys.add(work_key(item.project_id))
            if op_rows:
                conn.execute(insert(t.operations), op_rows)
                conn.execute(insert(t.tasks), task_rows)
            return results

    @staticmethod
    def _operation_row(tx: Tx, item: NewOperation, queue_id: str) -> dict[str, Any]:
        action = item.action
        return {
            "id": new_id("operation"),
            "project_id": item.project_id,
            "action_id": action.id,
            "action_version_id": action.version_id,
            "action_name": action.name,
            "action_version": action.version,
            "action_digest": action.digest,
            "queue_id": queue_id,
            "queue_name": item.queue,
            "status": OS.QUEUED.value,
            "step_code": None,
            "progress_percent": None,
            "progress_message": None,
            "n_queued": 1,
            "n_running": 0,
            "n_succeeded": 0,
            "n_failed": 0,
            "n_canceled": 0,
            "parameters": item.parameters,
            "params_digest": item.params_digest,
            "result": None,
            "error": None,
            "exit_reason": None,
            "created_by": item.created_by,
            "source_type": item.source_type.value,
            "source_id": item.source_id,
            "idempotency_key": item.idempotency_key,
            "timeout": item.timeout,
            "deadline_at": tx.now + item.timeout if item.timeout else None,
            "attempts": 0,
            "max_attempts": action.definition.max_attempts,
            "worker_id": None,
            "log_bytes": 0,
            "created_at": tx.now,
            "updated_at": tx.now,
            "started_at": None,
            "ended_at": None,
        }

    @staticmethod
    def _task_row(tx: Tx, op: dict[str, Any], definition: ActionDefinition) -> dict[str, Any]:
        return {
            "id": new_id("task"),
            "operation_id": op["id"],
            "project_id": op["project_id"],
            "queue_id": op["queue_id"],
            "step_id": "main",
            "status": OS.QUEUED.value,
            "priority": 0,
            "parameters": op["parameters"],
            "attempts": 0,
            "max_attempts": definition.max_attempts,
            "available_at": tx.now,
            "created_at": tx.now,
            "updated_at": tx.now,
        }

    def find_cached_success(self, action_version_id: str, params_digest: str) -> str | None:
        """The id of a SUCCEEDED operation of this version with these parameters."""
        with self.read() as conn:
            return conn.execute(
                select(t.operations.c.id)
                .where(
                    t.operations.c.action_version_id == action_version_id,
                    t.operations.c.params_digest == params_digest,
                    t.operations.c.status == OS.SUCCEEDED.value,
                )
                .limit(1)
            ).scalar()

    # -- claim ---------------------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        project_id: str,
        queue_names: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[Assignment]:
        """Take up to `limit` waiting tasks for a worker, each under a new lease."""
        with self.write() as tx:
            conn = tx.conn
            status = conn.execute(
                select(t.workers.c.status).where(t.workers.c.id == worker_id)
            ).scalar()
            if status in (WorkerStatus.STOPPING.value, WorkerStatus.STOPPED.value):
                return []  # a draining worker's pending claim must not take new work
            queue_ids = select(t.queues.c.id).where(
                t.queues.c.project_id == project_id, t.queues.c.name.in_(queue_names)
            )
            # Lock order everywhere: operations, then tasks, then session actions.
            # A task whose operation is locked (being canceled, say) is skipped.
            picked = conn.execute(
                select(t.tasks.c.id, t.tasks.c.operation_id)
                .select_from(
                    t.tasks.join(t.operations, t.operations.c.id == t.tasks.c.operation_id)
                )
                .where(
                    t.tasks.c.status == OS.QUEUED.value,
                    t.tasks.c.queue_id.in_(queue_ids.scalar_subquery()),
                    t.tasks.c.available_at <= tx.now,
                )
                .order_by(t.tasks.c.priority.desc(), t.tasks.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=[t.operations, t.tasks])
            ).all()
            if not picked:
                conn.execute(
                    update(t.workers)
                    .where(t.workers.c.id == worker_id)
                    .values(last_heartbeat_at=tx.now)
                )
                return []
            claimed = conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.id.in_([p.id for p in picked]), t.tasks.c.status == OS.QUEUED.value
                )
                .values(
                    status=OS.SCHEDULED.value, attempts=t.tasks.c.attempts + 1, updated_at=tx.now
                )
                .returning(
                    t.tasks.c.id,
                    t.tasks.c.operation_id,
                    t.tasks.c.step_id,
                    t.tasks.c.parameters,
                    t.tasks.c.attempts,
                )
            ).all()
            op_ids = sorted({c.operation_id for c in claimed})
            ops = {
                r.id: r
                for r in conn.execute(
                    select(
                        t.operations.c.id,
                        t.operations.c.timeout,
                        t.operations.c.deadline_at,
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
            for task in claimed:
                op = ops[task.operation_id]
                definition = ActionDefinition.model_validate(op.definition)
                types = {p.name: p.type for p in definition.parameters}
                session_id, sa_id = new_id("session"), new_id("session_action")
                sessions.append(
                    {
                        "id": session_id,
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
                        "session_id": session_id,
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
                                "parameters": {
                                    k: tagged(v, types.get(k, "json"))
                                    for k, v in task.parameters.items()
                                },
                            }
                        },
                        "created_at": tx.now,
                    }
                )
                deltas[task.operation_id]["n_queued"] -= 1
                deltas[task.operation_id]["n_running"] += 1
                tx.history(task.id, OS.SCHEDULED.value, f"claimed by {worker_id}")
                tx.history(sa_id, SAS.ASSIGNED.value, f"assigned to {worker_id}")
                timeout = definition.timeout
                if op.deadline_at is not None:
                    left = max(op.deadline_at - tx.now, 0.001)
                    timeout = left if timeout is None else min(timeout, left)
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
                        timeout=timeout,
                    )
                )
            conn.execute(insert(t.sessions), sessions)
            conn.execute(insert(t.session_actions), actions)
            conn.execute(
                update(t.operations)
                .where(t.operations.c.id == bindparam("oid"))
                .values(
                    attempts=t.operations.c.attempts + 1,
                    worker_id=worker_id,
                    updated_at=tx.now,
                ),
                [{"oid": oid} for oid in op_ids],
            )
            bump(tx, deltas)
            conn.execute(
                update(t.workers)
                .where(t.workers.c.id == worker_id)
                .values(status=WorkerStatus.RUNNING.value, last_heartbeat_at=tx.now)
            )
            self._settle(tx, op_ids)
            return assignments

    # -- heartbeat -----------------------------------------------------------------------
    def heartbeat(
        self, worker_id: str, held: Sequence[Held], status: WorkerStatus, lease_seconds: float
    ) -> tuple[list[str], list[str]]:
        """Renew the leases a worker still holds.

        Returns the held session actions to cancel and those the worker has lost.
        """
        with self.write() as tx:
            conn = tx.conn
            conn.execute(
                update(t.workers)
                .where(t.workers.c.id == worker_id)
                .values(status=status.value, last_heartbeat_at=tx.now)
            )
            if not held:
                return [], []
            epochs = {h.session_action_id: h.lease_epoch for h in held}
            found = conn.execute(
                select(
                    t.session_actions.c.id,
                    t.session_actions.c.status,
                    t.session_actions.c.lease_epoch,
                    t.session_actions.c.worker_id,
                    t.tasks.c.status.label("task_status"),
                )
                .select_from(
                    t.session_actions.join(t.tasks, t.tasks.c.id == t.session_actions.c.task_id)
                )
                .where(t.session_actions.c.id.in_(list(epochs)))
                .order_by(t.session_actions.c.id)
                .with_for_update(of=t.session_actions)
            ).all()
            live = [
                r
                for r in found
                if r.worker_id == worker_id
                and r.status in _LIVE_SA
                and r.lease_epoch == epochs[r.id]
            ]
            live_ids = [r.id for r in live]
            if live_ids:
                conn.execute(
                    update(t.session_actions)
                    .where(
                        t.session_actions.c.id.in_(live_ids),
                        t.session_actions.c.status.in_(_LIVE_SA),
                    )
                    .values(lease_expires_at=tx.now + lease_seconds)
                )
            cancel = [r.id for r in live if r.task_status == OS.CANCELING.value]
            lost = sorted(set(epochs) - set(live_ids))
            return cancel, lost

    def release_worker(self, worker_id: str) -> int:
        """A worker has stopped: give back whatever it still holds, without spending attempts.

        Returns how many attempts were released.
        """
        with self.write() as tx:
            held = self._lock_attempts(
                tx,
                t.session_actions.c.worker_id == worker_id,
                t.session_actions.c.status.in_(_LIVE_SA),
            )
            for sa in held:
                self._end_attempt(tx, sa, SAS.INTERRUPTED, "worker stopped", requeue_free=True)
            self._settle(tx, sorted({sa["operation_id"] for sa in held}))
            return len(held)

    # -- reports -------------------------------------------------------------------------
    def apply_reports(self, worker_id: str, reports: Sequence[Report]) -> list[ReportOutcome]:
        """Apply a worker's reports in order; each is accepted or refused on its own."""
        with self.write() as tx:
            conn = tx.conn
            ids = sorted({r.session_action_id for r in reports})
            op_ids = conn.execute(
                select(t.session_actions.c.operation_id).where(t.session_actions.c.id.in_(ids))
            ).scalars()
            ops = self._locked_operations(tx, op_ids)
            sas = {
                r.id: dict(r._mapping)
                for r in conn.execute(
                    select(*_REPORT_SA_COLUMNS)
                    .select_from(
                        t.session_actions.join(t.tasks, t.tasks.c.id == t.session_actions.c.task_id)
                    )
                    .where(t.session_actions.c.id.in_(ids))
                    .order_by(t.session_actions.c.id)
                    .with_for_update(of=t.session_actions)
                )
            }
            effects = ReportEffects(tx, sas, ops)
            touched: set[str] = set()
            outcomes = []
            for report in reports:
                sa = sas.get(report.session_action_id)
                reason = self._refusal(sa, worker_id, report)
                if reason is None and sa is not None:
                    touched.add(sa["operation_id"])
                    if report.kind in FAST_KINDS:
                        effects.apply(sa, report)
                    else:
                        effects.flush()
                        self._apply_rare_report(tx, sa, report)
                        self._reload(tx, sa, ops)
                outcomes.append(
                    ReportOutcome(
                        session_action_id=report.session_action_id,
                        accepted=reason is None,
                        reason=reason,
                    )
                )
            effects.flush()
            self._settle(tx, sorted(touched))
            return outcomes

    def _locked_operations(self, tx: Tx, operation_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Lock operations in id order and return what reports may change of them."""
        ids = sorted(set(operation_ids))
        if not ids:
            return {}
        found = tx.conn.execute(
            select(*_REPORT_OP_COLUMNS)
            .where(t.operations.c.id.in_(ids))
            .order_by(t.operations.c.id)
            .with_for_update()
        )
        return {r.id: dict(r._mapping) for r in found}

    @staticmethod
    def _reload(tx: Tx, sa: dict[str, Any], ops: dict[str, dict[str, Any]]) -> None:
        """Re-read a session action, its task and its operation after a rare report."""
        sa.update(
            tx.conn.execute(
                select(*_REPORT_SA_COLUMNS)
                .select_from(
                    t.session_actions.join(t.tasks, t.tasks.c.id == t.session_actions.c.task_id)
                )
                .where(t.session_actions.c.id == sa["id"])
            )
            .one()
            ._mapping
        )
        ops[sa["operation_id"]].update(
            tx.conn.execute(
                select(*_REPORT_OP_COLUMNS).where(t.operations.c.id == sa["operation_id"])
            )
            .one()
            ._mapping
        )

    @staticmethod
    def _refusal(sa: dict[str, Any] | None, worker_id: str, report: Report) -> str | None:
        if sa is None or sa["worker_id"] != worker_id:
            return "unknown session action"
        if sa["lease_epoch"] != report.lease_epoch:
            return f"lease epoch {report.lease_epoch} superseded by {sa['lease_epoch']}"
        if sa["status"] not in _LIVE_SA:
            return f"session action is {sa['status']}"
        return None

    def _apply_rare_report(self, tx: Tx, sa: dict[str, Any], report: Report) -> None:
        """`released` and `canceled`: rare, so applied statement by statement."""
        if report.kind == "released":
            self._end_attempt(tx, sa, SAS.INTERRUPTED, "released by worker", requeue_free=True)
            return
        self._move_sa(
            tx,
            sa,
            SAS.CANCELED,
            None,
            ended_at=tx.now,
            lease_expires_at=None,
            process_exit_code=report.exit_code,
            worker_updated_at=tx.now,
        )
        task_id, op_id = sa["task_id"], sa["operation_id"]
        self._move_task(tx, task_id, op_id, OS.CANCELING, "cancel reached the worker")
        if self._move_task(tx, task_id, op_id, OS.CANCELED, None):
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id)
                .values(exit_reason="CANCELED")
            )

    def _end_attempt(
        self, tx: Tx, sa: dict[str, Any], status: SAS, detail: str, *, requeue_free: bool = False
    ) -> None:
        """End an attempt that did not finish; requeue its task if it may run again."""
        self._move_sa(tx, sa, status, detail, ended_at=tx.now, lease_expires_at=None)
        task = tx.conn.execute(
            select(t.tasks.c.status, t.tasks.c.attempts, t.tasks.c.max_attempts)
            .where(t.tasks.c.id == sa["task_id"])
            .with_for_update()
        ).one()
        op_id = sa["operation_id"]
        if task.status == OS.CANCELING.value:
            self._move_task(tx, sa["task_id"], op_id, OS.CANCELED, detail)
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id)
                .values(exit_reason="CANCELED")
            )
        elif requeue_free or task.attempts < task.max_attempts:
            attempts = task.attempts - 1 if requeue_free else task.attempts
            self._move_task(
                tx, sa["task_id"], op_id, OS.QUEUED, detail, attempts=attempts, available_at=tx.now
            )
            if requeue_free:
                tx.conn.execute(
                    update(t.operations)
                    .where(t.operations.c.id == op_id)
                    .values(attempts=t.operations.c.attempts - 1)
                )
            tx.keys.add(work_key(sa["project_id"]))
        elif self._move_task(tx, sa["task_id"], op_id, OS.FAILED, detail):
            message = f"{detail}; gave up after {task.attempts} attempt(s)"
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id)
                .values(
                    error={"code": "LEASE_EXPIRED", "message": message, "details": {}},
                    exit_reason="LEASE_EXPIRED",
                )
            )

    # -- cancel, delete ------------------------------------------------------------------
    def cancel_operation(self, project_id: str, operation_id: str, detail: str) -> None:
        """Cancel an operation: waiting tasks at once, running ones via their workers."""
        with self.write() as tx:
            conn = tx.conn
            op = conn.execute(
                select(t.operations.c.status)
                .where(t.operations.c.id == operation_id, t.operations.c.project_id == project_id)
                .with_for_update()
            ).first()
            if op is None:
                raise NotFound(f"no operation {operation_id}", id=operation_id)
            status = OS(op.status)
            if status is OS.CANCELING:
                return
            if status.is_terminal():
                raise Conflict(
                    f"operation {operation_id} is already {status.value}", status=status.value
                )
            conn.execute(
                update(t.operations)
                .where(t.operations.c.id == operation_id, t.operations.c.status == status.value)
                .values(status=OS.CANCELING.value, updated_at=tx.now)
            )
            tx.history(operation_id, OS.CANCELING.value, detail)
            tx.event(project_id, "operation.status", operation_id, {"status": "CANCELING"})
            tasks = conn.execute(
                select(t.tasks.c.id, t.tasks.c.status).where(t.tasks.c.operation_id == operation_id)
            ).all()
            for task in tasks:
                if task.status == OS.QUEUED.value:
                    self._move_task(tx, task.id, operation_id, OS.CANCELED, detail)
                elif not OS(task.status).is_terminal():
                    self._move_task(tx, task.id, operation_id, OS.CANCELING, detail)
            for sa in conn.execute(
                select(
                    t.session_actions.c.id,
                    t.session_actions.c.status,
                    t.session_actions.c.worker_id,
                )
                .where(
                    t.session_actions.c.operation_id == operation_id,
                    t.session_actions.c.status.in_(_LIVE_SA),
                )
                .order_by(t.session_actions.c.id)
            ).all():
                if sa.status == SAS.RUNNING.value:
                    self._move_sa(tx, dict(sa._mapping), SAS.CANCELING, detail)
                tx.keys.add(worker_key(sa.worker_id))
            conn.execute(
                update(t.operations)
                .where(t.operations.c.id == operation_id, t.operations.c.exit_reason.is_(None))
                .values(exit_reason="CANCELED")
            )
            self._settle(tx, [operation_id])

    def delete_operation(self, project_id: str, operation_id: str) -> None:
        """Delete a finished operation and everything recorded about it."""
        with self.write() as tx:
            conn = tx.conn
            status = conn.execute(
                select(t.operations.c.status).where(
                    t.operations.c.id == operation_id, t.operations.c.project_id == project_id
                )
            ).scalar()
            if status is None:
                raise NotFound(f"no operation {operation_id}", id=operation_id)
            if not OS(status).is_terminal():
                raise Conflict(
                    f"operation {operation_id} is {status}; cancel it before deleting it",
                    status=status,
                )
            entity_ids = [operation_id]
            entity_ids += (
                conn.execute(select(t.tasks.c.id).where(t.tasks.c.operation_id == operation_id))
                .scalars()
                .all()
            )
            entity_ids += (
                conn.execute(
                    select(t.session_actions.c.id).where(
                        t.session_actions.c.operation_id == operation_id
                    )
                )
                .scalars()
                .all()
            )
            conn.execute(
                delete(t.status_history).where(t.status_history.c.entity_id.in_(entity_ids))
            )
            conn.execute(delete(t.logs).where(t.logs.c.operation_id == operation_id))
            conn.execute(
                delete(t.session_actions).where(t.session_actions.c.operation_id == operation_id)
            )
            conn.execute(delete(t.sessions).where(t.sessions.c.operation_id == operation_id))
            conn.execute(delete(t.tasks).where(t.tasks.c.operation_id == operation_id))
            conn.execute(delete(t.operations).where(t.operations.c.id == operation_id))
            tx.event(project_id, "operation.deleted", operation_id, {})
            tx.keys.add(operation_key(operation_id))

    # -- reaper --------------------------------------------------------------------------
    def reap(self, worker_silence: float, batch: int = 500) -> int:
        """Interrupt attempts whose lease lapsed; mark silent workers NOT_RESPONDING.

        Safe to run in every API process at once. Returns how many attempts ended.
        """
        with self.write() as tx:
            conn = tx.conn
            lapsed = self._lock_attempts(
                tx,
                t.session_actions.c.lease_expires_at < tx.now,
                t.session_actions.c.status.in_(_LIVE_SA),
                limit=batch,
            )
            for sa in lapsed:
                self._end_attempt(tx, sa, SAS.INTERRUPTED, "lease expired")
            conn.execute(
                update(t.workers)
                .where(
                    t.workers.c.last_heartbeat_at < tx.now - worker_silence,
                    t.workers.c.status.in_(
                        [
                            WorkerStatus.IDLE.value,
                            WorkerStatus.RUNNING.value,
                            WorkerStatus.STOPPING.value,
                        ]
                    ),
                )
                .values(status=WorkerStatus.NOT_RESPONDING.value)
            )
            self._settle(tx, sorted({sa["operation_id"] for sa in lapsed}))
            return len(lapsed)

    # -- status machinery ----------------------------------------------------------------
    def _lock_attempts(
        self, tx: Tx, *where: ColumnElement[bool], limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Lock the session actions matching `where`, their operations first (lock order).

        Rows another transaction holds are skipped; they are that transaction's to end.
        """
        conn = tx.conn
        self._lock_operations(
            tx,
            conn.execute(
                select(t.session_actions.c.operation_id).where(*where).limit(limit)
            ).scalars(),
        )
        found = conn.execute(
            select(
                t.session_actions.c.id,
                t.session_actions.c.status,
                t.session_actions.c.operation_id,
                t.session_actions.c.task_id,
                t.session_actions.c.project_id,
            )
            .where(*where)
            .order_by(t.session_actions.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [dict(r._mapping) for r in found]

    @staticmethod
    def _lock_operations(tx: Tx, operation_ids: Iterable[str]) -> None:
        """Lock operations in id order: every writer takes them first, so none deadlock."""
        ids = sorted(set(operation_ids))
        if ids:
            tx.conn.execute(
                select(t.operations.c.id)
                .where(t.operations.c.id.in_(ids))
                .order_by(t.operations.c.id)
                .with_for_update()
            ).all()

    def _move_sa(
        self, tx: Tx, sa: dict[str, Any], target: SAS, detail: str | None, **values: Any
    ) -> bool:
        sources = [s.value for s in SAS.sources_of(target)]
        done = tx.conn.execute(
            update(t.session_actions)
            .where(t.session_actions.c.id == sa["id"], t.session_actions.c.status.in_(sources))
            .values(status=target.value, **values)
        ).rowcount
        if done:
            sa["status"] = target.value
            tx.history(sa["id"], target.value, detail)
        return bool(done)

    def _move_task(
        self,
        tx: Tx,
        task_id: str,
        operation_id: str,
        target: OS,
        detail: str | None,
        **values: Any,
    ) -> bool:
        current = tx.conn.execute(
            select(t.tasks.c.status).where(t.tasks.c.id == task_id).with_for_update()
        ).scalar_one()
        if not OS(current).can_transition_to(target):
            return False
        tx.conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == task_id, t.tasks.c.status == current)
            .values(status=target.value, updated_at=tx.now, **values)
        )
        tx.history(task_id, target.value, detail)
        before, after = COUNTER_OF[OS(current)], COUNTER_OF[target]
        if before != after:
            bump(tx, {operation_id: {before: -1, after: 1}})
        return True

    def _settle(self, tx: Tx, operation_ids: Sequence[str]) -> None:
        """Bring each operation's status in line with its tasks."""
        if not operation_ids:
            return
        conn = tx.conn
        ops = conn.execute(
            select(t.operations)
            .where(t.operations.c.id.in_(operation_ids))
            .order_by(t.operations.c.id)
            .with_for_update()
        ).all()
        started = set(
            conn.execute(
                select(t.tasks.c.operation_id)
                .where(
                    t.tasks.c.operation_id.in_(operation_ids),
                    t.tasks.c.status.in_([OS.RUNNING.value, OS.CANCELING.value]),
                )
                .distinct()
            ).scalars()
        )
        changes: list[dict[str, Any]] = []
        for op in ops:
            tx.keys.add(operation_key(op.id))
            current = OS(op.status)
            target = rollup(current, rows.counts_of(op), op.id in started)
            if target is current:
                continue
            path = current.path_to(target) or [target]
            if op.id in tx.started and OS.RUNNING not in path and current is not OS.RUNNING:
                # Work that started and ended in one batch still ran: record RUNNING.
                to_running = current.path_to(OS.RUNNING)
                onwards = OS.RUNNING.path_to(target)
                if to_running is not None and onwards is not None:
                    path = to_running + onwards
            started_at = op.started_at
            if OS.RUNNING in path and started_at is None:
                started_at = tx.now
            changes.append(
                {
                    "b_id": op.id,
                    "b_from": current.value,
                    "v_status": target.value,
                    "v_updated_at": tx.now,
                    "v_started_at": started_at,
                    "v_ended_at": tx.now if target.is_terminal() else op.ended_at,
                    "v_exit_reason": "SUCCEEDED" if target is OS.SUCCEEDED else op.exit_reason,
                }
            )
            for step in path:
                tx.history(op.id, step.value, None)
            tx.event(op.project_id, "operation.status", op.id, {"status": target.value})
        if changes:
            conn.execute(_SETTLE, changes)
