"""Leases: heartbeats renew them; a worker's end or the reaper ends what they cover."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, case, insert, select, update

from oprun.domain.protocol import Held
from oprun.domain.silence import Forgiveness, SilenceRule
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.endings import advance_steps
from oprun.store.transitions import (
    LIVE_SA,
    end_attempt,
    interrupt_environments,
    lock_attempts,
    settle,
)

log = logging.getLogger("oprun.store")

HEARD = (WorkerStatus.IDLE.value, WorkerStatus.RUNNING.value, WorkerStatus.STOPPING.value)
"""Statuses of workers the server is listening to: a silence makes them NOT_RESPONDING."""
ROUND_ID = 1
"""The one row of `reaper_rounds`."""


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

    def reap(
        self, worker_silence: float, batch: int = 500, *, silence: SilenceRule | None = None
    ) -> int:
        """Interrupt attempts whose lease lapsed; mark silent workers NOT_RESPONDING.

        With `silence`, a silence of the server's own since the last round is forgiven
        before anything is reaped, and the round's end is recorded for the next one (in
        one transaction, so no round can reap what another is about to forgive). Safe
        to run in every API process at once. Returns how many attempts ended.
        """
        forgiven = None
        with self.write() as tx:
            conn = tx.conn
            if silence is not None:
                forgiven = _forgive_own_silence(tx, silence)
            lapsed = lock_attempts(tx, t.session_actions.c.id.in_(_lapsed(tx.now, batch)))
            for sa in lapsed:
                end_attempt(tx, sa, "lease expired")
            advance_steps(tx, {sa["operation_id"] for sa in lapsed})
            conn.execute(
                update(t.workers)
                .where(
                    t.workers.c.last_heartbeat_at < tx.now - worker_silence,
                    t.workers.c.status.in_(HEARD),
                )
                .values(status=WorkerStatus.NOT_RESPONDING.value)
            )
            settle(tx, sorted({sa["operation_id"] for sa in lapsed}))
            if silence is not None:
                conn.execute(
                    update(t.reaper_rounds)
                    .where(t.reaper_rounds.c.id == ROUND_ID)
                    .values(at=silence.mark(tx.now, self._db_now(conn)))
                )
        if forgiven is not None:
            log.warning(
                "event=own_silence seconds=%.1f action=leases_and_heartbeats_moved",
                forgiven.seconds,
            )
        return len(lapsed)


def _lapsed(now: float, batch: int) -> Select[tuple[str]]:
    """The ids of up to `batch` live attempts whose lease lapsed before `now`, oldest first.

    Read from the partial index of leased attempts (`ix_session_actions_leased`), in its
    order: a query ordered by id instead may walk every attempt ever made (SQLite does).
    """
    sas = t.session_actions.c
    return (
        select(sas.id)
        .where(sas.lease_expires_at < now, sas.status.in_(LIVE_SA))
        .order_by(sas.lease_expires_at, sas.id)
        .limit(batch)
    )


def _forgive_own_silence(tx: Tx, rule: SilenceRule) -> Forgiveness | None:
    """Forgive the server's own silence since the last reaper round, if there was one.

    When the previous round (`reaper_rounds`) ended further back than `rule.tolerance`
    (every API process was down, the database was unreachable, or its clock stepped
    forward), the last heartbeats of the workers still heard and the leases still live
    move forward by the silence, never past a renewal now (`oprun.domain.silence`). The
    round's row stays locked until the transaction ends (where `reap` records the
    round), so among API processes reaping at once one forgives a silence, once.
    """
    conn, rounds = tx.conn, t.reaper_rounds
    last = conn.execute(
        select(rounds.c.at).where(rounds.c.id == ROUND_ID).with_for_update()
    ).first()
    if last is None:  # the migration makes the row: only a hand-made schema lacks it
        conn.execute(insert(rounds).values(id=ROUND_ID, at=tx.now))
        return None
    forgiven = rule.forgive(tx.now, last.at)
    if forgiven is None:
        return None
    workers, sas = t.workers.c, t.session_actions.c
    conn.execute(
        update(t.workers)
        .where(workers.status.in_(HEARD), workers.last_heartbeat_at < forgiven.heartbeat_cap)
        .values(
            last_heartbeat_at=_moved(
                workers.last_heartbeat_at, forgiven.seconds, forgiven.heartbeat_cap
            )
        )
    )
    conn.execute(
        update(t.session_actions)
        .where(sas.status.in_(LIVE_SA), sas.lease_expires_at < forgiven.lease_cap)
        .values(lease_expires_at=_moved(sas.lease_expires_at, forgiven.seconds, forgiven.lease_cap))
    )
    return forgiven


def _moved(column: Any, seconds: float, cap: float) -> ColumnElement[Any]:
    """`Forgiveness.lease` / `.heartbeat` in SQL, for rows whose value is below `cap`."""
    return case((column + seconds < cap, column + seconds), else_=cap)
