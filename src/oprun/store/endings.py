"""What follows the end of an attempt: later steps released or canceled, quarantine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import case, func, insert, select, update

from oprun.domain.policy import quarantine_after
from oprun.domain.quarantine import is_quarantined, quarantine_message
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.steps import StepTally, release_steps
from oprun.store import schema as t
from oprun.store.base import Tx, insert_new
from oprun.store.counters import bump
from oprun.store.notify import logs_key, work_key


def advance_steps(tx: Tx, operation_ids: Iterable[str]) -> None:
    """Release steps whose dependencies all succeeded; cancel those that can never run."""
    conn = tx.conn
    for op_id in sorted(set(operation_ids)):
        op = conn.execute(
            select(t.operations.c.project_id, t.operations.c.steps, t.operations.c.status).where(
                t.operations.c.id == op_id
            )
        ).first()
        if op is None or not op.steps or OS(op.status).is_terminal():
            continue
        held_back = func.sum(case((t.tasks.c.available_at >= t.WAITING_ON_STEPS, 1), else_=0))
        release = release_steps(
            op.steps,
            (
                StepTally(step, OS(status), count, int(held or 0))
                for step, status, count, held in conn.execute(
                    select(t.tasks.c.step_id, t.tasks.c.status, func.count(), held_back)
                    .where(t.tasks.c.operation_id == op_id)
                    .group_by(t.tasks.c.step_id, t.tasks.c.status)
                )
            ),
        )
        ready, never = release.ready, release.never
        if ready:
            conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.operation_id == op_id,
                    t.tasks.c.step_id.in_(ready),
                    t.tasks.c.status == OS.QUEUED.value,
                    t.tasks.c.available_at >= t.WAITING_ON_STEPS,
                )
                .values(available_at=tx.now, updated_at=tx.now)
            )
            tx.keys.add(work_key(op.project_id))
        if never:
            canceled = conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.operation_id == op_id,
                    t.tasks.c.step_id.in_(never),
                    t.tasks.c.status == OS.QUEUED.value,
                )
                .values(status=OS.CANCELED.value, updated_at=tx.now)
            ).rowcount
            bump(tx, {op_id: {"n_queued": -canceled, "n_canceled": canceled}})
            system_log(
                tx,
                op_id,
                f"step(s) {', '.join(never)} will not run: a step they wait for failed",
            )


def quarantine(tx: Tx, failures: Sequence[tuple[str, str]]) -> None:
    """Keep a worker off an operation once it failed `quarantine_after` tasks in a row."""
    conn = tx.conn
    for op_id, worker_id in sorted(set(failures)):
        op = conn.execute(
            select(t.operations.c.project_id, t.operations.c.policy).where(
                t.operations.c.id == op_id
            )
        ).first()
        limit = quarantine_after(op.policy) if op else 0
        if not limit:
            continue
        last_ended = conn.execute(
            select(t.session_actions.c.status)
            .where(
                t.session_actions.c.operation_id == op_id,
                t.session_actions.c.worker_id == worker_id,
                t.session_actions.c.task_id.isnot(None),
                t.session_actions.c.ended_at.isnot(None),
            )
            .order_by(t.session_actions.c.ended_at.desc(), t.session_actions.c.id.desc())
            .limit(limit)
        ).scalars()
        if not is_quarantined([SAS(status) for status in last_ended], limit):
            continue
        quarantine = {"operation_id": op_id, "worker_id": worker_id, "created_at": tx.now}
        key = (t.quarantines.c.operation_id, t.quarantines.c.worker_id)
        if not insert_new(conn, t.quarantines, quarantine, *key):
            continue  # already quarantined (perhaps by a concurrent report)
        assert op is not None
        system_log(tx, op_id, quarantine_message(worker_id, limit))
        tx.event(op.project_id, "operation.quarantine", op_id, {"worker_id": worker_id})
        tx.keys.add(work_key(op.project_id))


def system_log(tx: Tx, operation_id: str, line: str) -> None:
    """Write a line from oprun itself into an operation's log."""
    tx.conn.execute(
        insert(t.logs).values(
            operation_id=operation_id,
            session_action_id=None,
            stream="system",
            line=line,
            at=tx.now,
        )
    )
    tx.keys.add(logs_key(operation_id))


def after_endings(tx: Tx, failures: Sequence[tuple[str, str]], stepped: Iterable[str]) -> None:
    """What follows attempts ending: quarantine after `failures`, later steps of `stepped`."""
    if failures:
        quarantine(tx, failures)
    advance_steps(tx, stepped)
