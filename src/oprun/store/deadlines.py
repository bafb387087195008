"""The reaper's rounds against the clock: operations past their deadline, retries come due."""

from __future__ import annotations

from sqlalchemy import and_, select

from oprun.domain.errors import Conflict
from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import StoreBase
from oprun.store.invocations import cancel_in
from oprun.store.notify import work_key


class DeadlineQueries(StoreBase):
    """Time-driven rounds of the reaper."""

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
                    cancel_in(
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
