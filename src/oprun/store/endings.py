"""What follows the end of an attempt: later steps released or canceled, quarantine."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import case, func, insert, select, update

from oprun.domain.plan import steps_blocked_by_failure, steps_to_release
from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.counters import bump
from oprun.store.notify import logs_key, work_key

_SUCCEEDED, _FAILED, _CANCELED = OS.SUCCEEDED.value, OS.FAILED.value, OS.CANCELED.value


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
        total: dict[str, int] = defaultdict(int)
        succeeded: dict[str, int] = defaultdict(int)
        failed: set[str] = set()
        waiting: set[str] = set()
        held_back = func.sum(case((t.tasks.c.available_at >= t.WAITING_ON_STEPS, 1), else_=0))
        for step, status, count, held in conn.execute(
            select(t.tasks.c.step_id, t.tasks.c.status, func.count(), held_back)
            .where(t.tasks.c.operation_id == op_id)
            .group_by(t.tasks.c.step_id, t.tasks.c.status)
        ):
            total[step] += count
            if status == _SUCCEEDED:
                succeeded[step] += count
            elif status in (_FAILED, _CANCELED):
                failed.add(step)
            elif status == OS.QUEUED.value and held:
                waiting.add(step)
        done = {step for step, n in total.items() if succeeded[step] == n}
        released = set(op.steps) - waiting
        ready = steps_to_release(op.steps, done, released)
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
        never = sorted(steps_blocked_by_failure(op.steps, failed) & waiting)
        if never:
            canceled = conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.operation_id == op_id,
                    t.tasks.c.step_id.in_(never),
                    t.tasks.c.status == OS.QUEUED.value,
                )
                .values(status=_CANCELED, updated_at=tx.now)
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
        limit = int((op.policy or {}).get("quarantine_after", 3)) if op else 0
        if not limit:
            continue
        recent = (
            conn.execute(
                select(t.session_actions.c.status)
                .where(
                    t.session_actions.c.operation_id == op_id,
                    t.session_actions.c.worker_id == worker_id,
                    t.session_actions.c.task_id.isnot(None),
                    t.session_actions.c.ended_at.isnot(None),
                )
                .order_by(t.session_actions.c.ended_at.desc(), t.session_actions.c.id.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        if len(recent) < limit or any(status != _FAILED for status in recent):
            continue
        already = conn.execute(
            select(t.quarantines.c.worker_id).where(
                t.quarantines.c.operation_id == op_id, t.quarantines.c.worker_id == worker_id
            )
        ).first()
        if already is not None:
            continue
        conn.execute(
            insert(t.quarantines).values(operation_id=op_id, worker_id=worker_id, created_at=tx.now)
        )
        assert op is not None
        message = (
            f"worker {worker_id} failed {limit} tasks in a row: it takes no more of this "
            "operation's tasks"
        )
        system_log(tx, op_id, message)
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
