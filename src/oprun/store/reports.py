"""Reports: what workers say of their attempts, applied in order, each accepted or refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update

from oprun.domain.protocol import Report, ReportOutcome
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.batch import padded
from oprun.store.counters import COUNTERS
from oprun.store.endings import after_endings, quarantine
from oprun.store.report_effects import (
    FAST_KINDS,
    OP_COLUMNS,
    SA_COLUMNS,
    SETTLED_COLUMNS,
    ReportEffects,
)
from oprun.store.transitions import LIVE_SA, end_attempt, move_sa, move_task, settle

_REPORT_SA_COLUMNS = (
    t.session_actions.c.id,
    t.session_actions.c.lease_epoch,
    t.session_actions.c.worker_id,
    t.session_actions.c.operation_id,
    t.session_actions.c.task_id,
    t.session_actions.c.project_id,
    t.session_actions.c.session_id,
    *(getattr(t.session_actions.c, c) for c in SA_COLUMNS),
    t.tasks.c.status.label("task_status"),
    t.tasks.c.attempts.label("task_attempts"),
    t.tasks.c.max_attempts.label("task_max_attempts"),
    t.tasks.c.available_at.label("task_available_at"),
)
_REPORT_OP_COLUMNS = (
    t.operations.c.id,
    t.operations.c.project_id,
    t.operations.c.policy,
    t.operations.c.steps,
    (
        t.operations.c.n_queued
        + t.operations.c.n_running
        + t.operations.c.n_succeeded
        + t.operations.c.n_failed
        + t.operations.c.n_canceled
    ).label("n_tasks"),
    *(getattr(t.operations.c, c) for c in (*OP_COLUMNS, *SETTLED_COLUMNS, *COUNTERS)),
)
_LOCK_REPORTED_OPERATIONS = (
    select(*_REPORT_OP_COLUMNS)
    .where(
        t.operations.c.id.in_(
            select(t.session_actions.c.operation_id).where(
                t.session_actions.c.id.in_(bindparam("ids", expanding=True))
            )
        )
    )
    .order_by(t.operations.c.id)
    .with_for_update()
)
"""The operations a batch reports on, locked in id order (every writer's lock order)."""
_LOCK_REPORTED_ATTEMPTS = (
    select(*_REPORT_SA_COLUMNS)
    .select_from(t.session_actions.join(t.tasks, t.tasks.c.id == t.session_actions.c.task_id))
    .where(t.session_actions.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(t.session_actions.c.id)
    .with_for_update(of=t.session_actions)
)


class ReportQueries(StoreBase):
    """Reports about attempts at tasks."""

    def apply_reports(self, worker_id: str, reports: Sequence[Report]) -> list[ReportOutcome]:
        """Apply a worker's reports in order; each is accepted or refused on its own."""
        with self.write() as tx:
            conn = tx.conn
            ids = padded({r.session_action_id for r in reports})
            ops = {
                r.id: dict(r._mapping)
                for r in conn.execute(_LOCK_REPORTED_OPERATIONS, {"ids": ids})
            }
            sas = {
                r.id: dict(r._mapping) for r in conn.execute(_LOCK_REPORTED_ATTEMPTS, {"ids": ids})
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
                        effects.reloaded()
                outcomes.append(
                    ReportOutcome(
                        session_action_id=report.session_action_id,
                        accepted=reason is None,
                        reason=reason,
                    )
                )
            if effects.ended_in_steps:
                # Later steps may start or be canceled: that reads and writes tasks
                # and counters behind the effects, so settle from the rows.
                effects.flush()
                after_endings(tx, effects.failures, effects.ended_in_steps)
                settle(tx, sorted(touched))
            else:
                effects.finish(touched)
                if effects.failures:
                    quarantine(tx, effects.failures)
            return outcomes

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
            end_attempt(tx, sa, "released by worker", given_back=True)
            return
        move_sa(
            tx,
            sa,
            SAS.NEVER_ATTEMPTED if sa["status"] == SAS.ASSIGNED.value else SAS.CANCELED,
            None,
            ended_at=tx.now,
            lease_expires_at=None,
            process_exit_code=report.exit_code,
            worker_updated_at=tx.now,
        )
        task_id, op_id = sa["task_id"], sa["operation_id"]
        move_task(tx, task_id, op_id, OS.CANCELING, "cancel reached the worker")
        if move_task(tx, task_id, op_id, OS.CANCELED, None):
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id, t.operations.c.exit_reason.is_(None))
                .values(exit_reason="CANCELED")
            )
