"""The status machinery every writer shares: locks, compare-and-set moves, rollup.

Every status change is compare-and-set: the UPDATE names the allowed source
statuses from the domain's transition table, so racing writers cannot both win.
Every writer locks operations first, in id order, then tasks, then session
actions, so none deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, select, update

from oprun.domain.models import TaskCounts
from oprun.domain.retry import (
    AfterInterruption,
    after_interruption,
    gave_up_message,
    interrupted_status,
)
from oprun.domain.rollup import rollup
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.store import rows
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.batch import BatchUpdate
from oprun.store.counters import COUNTER_OF, bump
from oprun.store.notify import ended_key, operation_key, work_key

LIVE_SA = (SAS.ASSIGNED.value, SAS.RUNNING.value, SAS.CANCELING.value)
"""Session action statuses that hold a worker (and a lease)."""
_SETTLE = BatchUpdate(
    t.operations,
    match=("id", "status"),
    write=("status", "updated_at", "started_at", "ended_at", "exit_reason"),
)


def end_attempt(tx: Tx, sa: dict[str, Any], detail: str, *, given_back: bool = False) -> None:
    """End an attempt that did not finish; what becomes of its task is `after_interruption`.

    Unless the worker gave the attempt back, the attempt's session is over too: its
    environment actions still running are interrupted, and the session accepts no
    more reports.
    """
    status = interrupted_status(SAS(sa["status"]), given_back=given_back)
    move_sa(tx, sa, status, detail, ended_at=tx.now, lease_expires_at=None)
    if not given_back:
        end_session(tx, sa["session_id"], detail)
    task = tx.conn.execute(
        select(t.tasks.c.status, t.tasks.c.attempts, t.tasks.c.max_attempts)
        .where(t.tasks.c.id == sa["task_id"])
        .with_for_update()
    ).one()
    op_id = sa["operation_id"]
    outcome = after_interruption(
        OS(task.status), task.attempts, task.max_attempts, given_back=given_back
    )
    if outcome is AfterInterruption.CANCELED:
        move_task(tx, sa["task_id"], op_id, OS.CANCELED, detail)
        tx.conn.execute(
            update(t.operations)
            .where(t.operations.c.id == op_id, t.operations.c.exit_reason.is_(None))
            .values(exit_reason="CANCELED")
        )
    elif outcome is AfterInterruption.GAVE_UP:
        if move_task(tx, sa["task_id"], op_id, OS.FAILED, detail):
            message = gave_up_message(detail, task.attempts)
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id)
                .values(
                    error={"code": "LEASE_EXPIRED", "message": message, "details": {}},
                    exit_reason="LEASE_EXPIRED",
                )
            )
    else:
        free = outcome is AfterInterruption.GIVEN_BACK
        attempts = task.attempts - 1 if free else task.attempts
        move_task(
            tx, sa["task_id"], op_id, OS.QUEUED, detail, attempts=attempts, available_at=tx.now
        )
        if free:
            tx.conn.execute(
                update(t.operations)
                .where(t.operations.c.id == op_id)
                .values(attempts=t.operations.c.attempts - 1)
            )
        tx.keys.add(work_key(sa["project_id"]))


def end_session(tx: Tx, session_id: str, detail: str) -> None:
    """Close a session: its running environment actions end INTERRUPTED."""
    conn = tx.conn
    conn.execute(
        update(t.sessions)
        .where(t.sessions.c.id == session_id, t.sessions.c.ended_at.is_(None))
        .values(ended_at=tx.now)
    )
    interrupt_environments(tx, t.session_actions.c.session_id == session_id, detail)


def interrupt_environments(tx: Tx, where: ColumnElement[bool], detail: str) -> None:
    """End the running session-level actions (environments) matching `where`."""
    for sa_id in tx.conn.execute(
        update(t.session_actions)
        .where(
            where,
            t.session_actions.c.task_id.is_(None),
            t.session_actions.c.status.in_(LIVE_SA),
        )
        .values(status=SAS.INTERRUPTED.value, ended_at=tx.now)
        .returning(t.session_actions.c.id)
    ).scalars():
        tx.history(sa_id, SAS.INTERRUPTED.value, detail)


def lock_attempts(
    tx: Tx, *where: ColumnElement[bool], limit: int | None = None
) -> list[dict[str, Any]]:
    """Lock the session actions matching `where`, their operations first (lock order).

    Rows another transaction holds are skipped; they are that transaction's to end.
    """
    conn = tx.conn
    lock_operations(
        tx,
        conn.execute(select(t.session_actions.c.operation_id).where(*where).limit(limit)).scalars(),
    )
    found = conn.execute(
        select(
            t.session_actions.c.id,
            t.session_actions.c.status,
            t.session_actions.c.operation_id,
            t.session_actions.c.task_id,
            t.session_actions.c.project_id,
            t.session_actions.c.session_id,
        )
        .where(*where)
        .order_by(t.session_actions.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [dict(r._mapping) for r in found]


def lock_operations(tx: Tx, operation_ids: Iterable[str]) -> None:
    """Lock operations in id order: every writer takes them first, so none deadlock."""
    ids = sorted(set(operation_ids))
    if ids:
        tx.conn.execute(
            select(t.operations.c.id)
            .where(t.operations.c.id.in_(ids))
            .order_by(t.operations.c.id)
            .with_for_update()
        ).all()


def move_sa(tx: Tx, sa: dict[str, Any], target: SAS, detail: str | None, **values: Any) -> bool:
    """Move a session action to `target` if its status allows it; False if it did not."""
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


def move_task(
    tx: Tx,
    task_id: str,
    operation_id: str,
    target: OS,
    detail: str | None,
    **values: Any,
) -> bool:
    """Move a task to `target` if its status allows it, keeping its operation's counters."""
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


def settle(tx: Tx, operation_ids: Sequence[str]) -> None:
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
        values = settled(tx, dict(op._mapping), rows.counts_of(op), op.id in started)
        if values is not None:
            changes.append(
                {"b_id": op.id, "b_status": op.status, **{f"v_{k}": v for k, v in values.items()}}
            )
    if changes:
        _SETTLE.run(conn, changes)


def settled(
    tx: Tx, op: Mapping[str, Any], counts: TaskCounts, any_running: bool
) -> dict[str, Any] | None:
    """The columns that bring operation `op` in line with its tasks; None: it already is.

    `op` holds the row's `id`, `project_id`, `status`, `started_at`, `ended_at` and
    `exit_reason` as locked; `counts` its task counters after this transaction's
    changes; `any_running` whether one of its tasks is RUNNING or CANCELING. Records
    the history rows and the status event; the caller writes the columns.
    """
    tx.keys.add(operation_key(op["id"]))
    current = OS(op["status"])
    target = rollup(current, counts, any_running)
    if target is OS.CANCELED and op["exit_reason"] == "TIMEOUT":
        target = OS.FAILED  # canceled by its deadline: it failed
    if target is current:
        return None
    if target.is_terminal():
        tx.keys.add(ended_key(op["id"]))
    path = current.path_to(target) or [target]
    if op["id"] in tx.started and OS.RUNNING not in path and current is not OS.RUNNING:
        # Work that started and ended in one batch still ran: record RUNNING.
        to_running = current.path_to(OS.RUNNING)
        onwards = OS.RUNNING.path_to(target)
        if to_running is not None and onwards is not None:
            path = to_running + onwards
    started_at = op["started_at"]
    if OS.RUNNING in path and started_at is None:
        started_at = tx.now
    for step in path:
        tx.history(op["id"], step.value, None)
    tx.event(op["project_id"], "operation.status", op["id"], {"status": target.value})
    return {
        "status": target.value,
        "updated_at": tx.now,
        "started_at": started_at,
        "ended_at": tx.now if target.is_terminal() else op["ended_at"],
        "exit_reason": "SUCCEEDED" if target is OS.SUCCEEDED else op["exit_reason"],
    }
