"""What follows the end of an attempt: later steps, quarantine, retries due, deadlines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import and_, case, func, insert, select, update

from oprun.domain.errors import Conflict
from oprun.domain.plan import steps_blocked_by_failure, steps_to_release
from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.counters import bump
from oprun.store.invocations import InvocationQueries
from oprun.store.notify import logs_key, work_key

_SUCCEEDED, _FAILED, _CANCELED = OS.SUCCEEDED.value, OS.FAILED.value, OS.CANCELED.value


class EndingQueries(InvocationQueries):
    """Consequences of attempts ending, shared by reports, the reaper and cancel."""

    def _advance_steps(self, tx: Tx, operation_ids: Iterable[str]) -> None:
        """Release steps whose dependencies all succeeded; cancel those that can never run."""
        conn = tx.conn
        for op_id in sorted(set(operation_ids)):
            op = conn.execute(
                select(
                    t.operations.c.project_id, t.operations.c.steps, t.operations.c.status
                ).where(t.operations.c.id == op_id)
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
                self._system_log(
                    tx,
                    op_id,
                    f"step(s) {', '.join(never)} will not run: a step they wait for failed",
                )

    def _quarantine(self, tx: Tx, failures: Sequence[tuple[str, str]]) -> None:
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
                insert(t.quarantines).values(
                    operation_id=op_id, worker_id=worker_id, created_at=tx.now
                )
            )
            assert op is not None
            message = (
                f"worker {worker_id} failed {limit} tasks in a row: it takes no more of this "
                "operation's tasks"
            )
            self._system_log(tx, op_id, message)
            tx.event(op.project_id, "operation.quarantine", op_id, {"worker_id": worker_id})
            tx.keys.add(work_key(op.project_id))

    @staticmethod
    def _system_log(tx: Tx, operation_id: str, line: str) -> None:
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

    # -- the reaper's other rounds -------------------------------------------------------
    def wake_for_due_retries(self, since: float) -> float:
        """Wake the claims of projects whose delayed tasks came due after `since`.

        Returns the instant checked up to, to pass as `since` next time.
        """
        with self.write() as tx:
            projects = tx.conn.execute(
                select(t.tasks.c.project_id)
                .where(
                    t.tasks.c.status == OS.QUEUED.value,
                    and_(t.tasks.c.available_at > since, t.tasks.c.available_at <= tx.now),
                )
                .distinct()
            ).scalars()
            tx.keys.update(work_key(p) for p in projects)
            return tx.now

    def time_out_operations(self, batch: int = 100) -> int:
        """Cancel operations past their deadline; they end FAILED with `TIMEOUT`."""
        with self.write() as tx:
            due = tx.conn.execute(
                select(t.operations.c.id, t.operations.c.project_id, t.operations.c.timeout)
                .where(
                    t.operations.c.deadline_at < tx.now,
                    t.operations.c.status.in_(
                        [OS.QUEUED.value, OS.SCHEDULED.value, OS.RUNNING.value]
                    ),
                )
                .order_by(t.operations.c.id)
                .limit(batch)
            ).all()
            timed_out = 0
            for op in due:
                message = f"the operation ran past its timeout of {op.timeout:g} s"
                try:
                    self._cancel_in(
                        tx,
                        op.project_id,
                        op.id,
                        message,
                        reason="TIMEOUT",
                        error={"code": "TIMEOUT", "message": message, "details": {}},
                    )
                except Conflict:
                    continue  # it ended between the query and its lock: nothing to time out
                timed_out += 1
            return timed_out

    def _after_endings(
        self, tx: Tx, failures: Sequence[tuple[str, str]], stepped: Iterable[str]
    ) -> None:
        if failures:
            self._quarantine(tx, failures)
        self._advance_steps(tx, stepped)
