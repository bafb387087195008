"""Leases: heartbeats renew them; a worker's end or the reaper ends what they cover."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, select, update

from oprun.domain.protocol import Held
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase
from oprun.store.endings import advance_steps
from oprun.store.transitions import (
    LIVE_SA,
    end_attempt,
    interrupt_environments,
    lock_attempts,
    settle,
)


class LeaseQueries(StoreBase):
    """Heartbeats, workers that stop or come back, and the reaper of lapsed leases."""

    def heartbeat(
        self, worker_id: str, held: Sequence[Held], status: WorkerStatus, lease_seconds: float
    ) -> tuple[list[str], list[str]]:
        """Renew the leases a worker still holds.

        Returns the held session actions to cancel and those the worker has lost.
        """
        with self.write() as tx:
            conn = tx.conn
            replaceable = [s.value for s in status.reported_over()]
            conn.execute(
                update(t.workers)
                .where(t.workers.c.id == worker_id)
                .values(
                    status=case(
                        (t.workers.c.status.in_(replaceable), status.value),
                        else_=t.workers.c.status,
                    ),
                    last_heartbeat_at=tx.now,
                )
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

    def abandon_worker(self, worker_id: str) -> int:
        """A worker that stopped answering came back: end its attempts (they count).

        It was marked NOT_RESPONDING, so its work may already run elsewhere; it is told
        to stop, and nothing more it reports is accepted. Returns the attempts ended.
        """
        return self._end_worker(worker_id, "worker stopped responding", given_back=False)

    def release_worker(self, worker_id: str) -> int:
        """A worker has stopped: give back whatever it still holds, without spending attempts.

        Returns how many attempts were released.
        """
        return self._end_worker(worker_id, "worker stopped", given_back=True)

    def _end_worker(self, worker_id: str, detail: str, *, given_back: bool) -> int:
        with self.write() as tx:
            held = lock_attempts(
                tx,
                t.session_actions.c.worker_id == worker_id,
                t.session_actions.c.status.in_(LIVE_SA),
            )
            for sa in held:
                end_attempt(tx, sa, detail, given_back=given_back)
            interrupt_environments(tx, t.session_actions.c.worker_id == worker_id, detail)
            touched = sorted({sa["operation_id"] for sa in held})
            advance_steps(tx, touched)
            settle(tx, touched)
            return len(held)

    def reap(self, worker_silence: float, batch: int = 500) -> int:
        """Interrupt attempts whose lease lapsed; mark silent workers NOT_RESPONDING.

        Safe to run in every API process at once. Returns how many attempts ended.
        """
        with self.write() as tx:
            conn = tx.conn
            lapsed = lock_attempts(
                tx,
                t.session_actions.c.lease_expires_at < tx.now,
                t.session_actions.c.status.in_(LIVE_SA),
                limit=batch,
            )
            for sa in lapsed:
                end_attempt(tx, sa, "lease expired")
            advance_steps(tx, {sa["operation_id"] for sa in lapsed})
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
            settle(tx, sorted({sa["operation_id"] for sa in lapsed}))
            return len(lapsed)
