"""Queries of the worker protocol: claim, heartbeat, report, release; and the reaper."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from oprun.domain.ids import new_id
from oprun.domain.models import ActionDefinition
from oprun.domain.params import tagged
from oprun.domain.protocol import Assignment, Held, Report, ReportOutcome
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.counters import bump
from oprun.store.invocations import InvocationQueries
from oprun.store.reporting import FAST_KINDS, OP_COLUMNS, SA_COLUMNS, ReportEffects
from oprun.store.transitions import LIVE_SA

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


class WorkQueries(InvocationQueries):
    """The hot paths of oprun: what worker agents do, and the reaper."""

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
                and r.status in LIVE_SA
                and r.lease_epoch == epochs[r.id]
            ]
            live_ids = [r.id for r in live]
            if live_ids:
                conn.execute(
                    update(t.session_actions)
                    .where(
                        t.session_actions.c.id.in_(live_ids),
                        t.session_actions.c.status.in_(LIVE_SA),
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
                t.session_actions.c.status.in_(LIVE_SA),
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
        if sa["status"] not in LIVE_SA:
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
                t.session_actions.c.status.in_(LIVE_SA),
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
