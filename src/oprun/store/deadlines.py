"""The reaper's rounds against the clock: operations past their deadline, retries come due.

Each check first reads, outside any write transaction, just the rows that are due,
from a partial index that holds only unfinished work (`ix_operations_deadline_pending`,
`ix_tasks_queued_available`): a round costs what is due, not what the database holds.
Only when something is due does it write (on SQLite, only then does it take the
database's write lock).
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from oprun.domain.errors import Conflict
from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import StoreBase
from oprun.store.invocations import cancel_in
from oprun.store.notify import work_key

TIMED = [OS.QUEUED.value, OS.SCHEDULED.value, OS.RUNNING.value]
"""The statuses a deadline cancels (a CANCELING operation is already on its way out)."""


def _due_operations(conn: Connection, now: float, batch: int) -> list[tuple[str, str, float]]:
    """(id, project id, timeout) of up to `batch` operations past their deadline, by id.

    The most overdue first when more than `batch` are due; returned in id order, the
    order every writer locks operations in.
    """
    ops = t.operations.c
    found = conn.execute(
        select(ops.id, ops.project_id, ops.timeout)
        .where(t.OPERATION_PENDING_DEADLINE, ops.deadline_at < now, ops.status.in_(TIMED))
        .order_by(ops.deadline_at)
        .limit(batch)
    ).all()
    return sorted((r.id, r.project_id, r.timeout) for r in found)


class DeadlineQueries(StoreBase):
    """Time-driven rounds of the reaper."""

    def wake_for_due_retries(self, since: float) -> float:
        """Wake the claims of projects whose delayed tasks came due after `since`.

        A task made available at its creation is not one: the creation's commit already
        woke the claims, and waking them again sent each to look in vain (and made a
        look counted once twice). A retry after its backoff, even a backoff of zero, and
        a step released are later than their task's creation. Returns the instant
        checked up to, to pass as `since` next time.
        """
        tasks = t.tasks.c
        with self.read() as conn:
            now = self._db_now(conn)
            projects = set(
                conn.execute(
                    select(tasks.project_id)
                    .where(
                        t.TASK_QUEUED,
                        tasks.available_at > since,
                        tasks.available_at <= now,
                        tasks.available_at > tasks.created_at,
                    )
                    .distinct()
                ).scalars()
            )
        if projects:
            with self.write() as tx:
                tx.keys.update(work_key(p) for p in projects)
        return now

    def time_out_operations(self, batch: int = 100) -> int:
        """Cancel operations past their deadline; they end FAILED with `TIMEOUT`."""
        with self.read() as conn:
            if not _due_operations(conn, self._db_now(conn), batch):
                return 0
        with self.write() as tx:
            timed_out = 0
            for op_id, project_id, timeout in _due_operations(tx.conn, tx.now, batch):
                message = f"the operation ran past its timeout of {timeout:g} s"
                try:
                    cancel_in(
                        tx,
                        project_id,
                        op_id,
                        message,
                        reason="TIMEOUT",
                        error={"code": "TIMEOUT", "message": message, "details": {}},
                    )
                except Conflict:
                    continue  # it ended between the query and its lock: nothing to time out
                timed_out += 1
            return timed_out
