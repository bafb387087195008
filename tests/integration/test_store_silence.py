"""The server's own silence in the store, on SQLite and PostgreSQL (`reap(silence=...)`).

A reaper round that comes long after the last one forgives the gap before it reaps:
what lapsed only because nobody was there to hear it is kept; what lapsed while the
server listened still ends.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from oprun.domain.models import ActionDefinition, InvocationSource
from oprun.domain.protocol import Held, Report
from oprun.domain.silence import SilenceRule
from oprun.domain.status import OperationStatus, WorkerStatus
from oprun.service.operations import params_digest
from oprun.store import NewOperation, Store
from oprun.store import schema as t

LEASE = 2.0
RULE = SilenceRule(reap_interval=0.05, lease_seconds=LEASE)
"""Tolerance: half a lease."""


def _claimed(store: Store, project_id: str):
    """One operation, one worker, the worker's claim of it."""
    action, _ = store.save_action(project_id, ActionDefinition(name="a", entrypoint="m:f"))
    ((op, _),) = store.create_operations(
        [
            NewOperation(
                project_id=project_id,
                action=action,
                queue="default",
                parameters={},
                params_digest=params_digest({}),
                created_by="test",
                source_type=InvocationSource.MANUAL,
                source_id="test",
                idempotency_key=None,
                timeout=None,
            )
        ]
    )
    worker = store.register_worker(project_id, "w", "host", ["default"], {})
    (assignment,) = store.claim(worker.id, project_id, ["default"], 1, LEASE)
    return op, worker, assignment


def _rounds(store: Store, seconds: float) -> None:
    """Reaper rounds on time for `seconds`: the server is there, listening."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        store.reap(worker_silence=3 * LEASE, silence=RULE)
        time.sleep(RULE.reap_interval)


def _lease(store: Store, sa_id: str) -> float:
    with store.read() as conn:  # type: ignore[attr-defined]
        return float(
            conn.execute(
                select(t.session_actions.c.lease_expires_at).where(t.session_actions.c.id == sa_id)
            ).scalar_one()
        )


def _last_round(store: Store) -> float:
    with store.read() as conn:  # type: ignore[attr-defined]
        return float(conn.execute(select(t.reaper_rounds.c.at)).scalar_one())


def _succeeded(store: Store, worker_id: str, sa_id: str, epoch: int) -> bool:
    (outcome,) = store.apply_reports(
        worker_id,
        [Report(session_action_id=sa_id, lease_epoch=epoch, kind="succeeded", result=1)],
    )
    return outcome.accepted


def test_after_the_servers_own_silence_no_lease_lapses_and_no_worker_is_given_up(store, project):
    op, worker, a = _claimed(store, project.id)
    _rounds(store, 0.2)
    time.sleep(3.5 * LEASE)  # no round, no heartbeat stored: the server is away
    assert store.reap(worker_silence=3 * LEASE, silence=RULE) == 0
    assert store.get_worker(project.id, worker.id).status is not WorkerStatus.NOT_RESPONDING
    assert store.get_operation(project.id, op.id).status is OperationStatus.SCHEDULED
    # The work finished during the outage: its report, arriving now, is accepted.
    assert _succeeded(store, worker.id, a.session_action_id, a.lease_epoch)
    assert store.get_operation(project.id, op.id).status is OperationStatus.SUCCEEDED


def test_what_lapsed_while_the_server_listened_still_ends(store, project):
    op, worker, _ = _claimed(store, project.id)
    _rounds(store, 3.5 * LEASE)  # rounds on time, no heartbeat: the worker is the silent one
    assert store.get_operation(project.id, op.id).status is OperationStatus.QUEUED
    assert store.get_worker(project.id, worker.id).status is WorkerStatus.NOT_RESPONDING


def test_the_silence_counts_only_what_the_server_did_not_hear(store, project):
    op, _, a = _claimed(store, project.id)
    expires = _lease(store, a.session_action_id)
    # Heard nothing for half a lease (by the store's clock, so a slow machine does not
    # stretch it)...
    while True:
        store.reap(worker_silence=3 * LEASE, silence=RULE)
        if expires - store.now() <= 0.5 * LEASE:
            break
        time.sleep(RULE.reap_interval)
    had = expires - _last_round(store)  # what the lease had left when last heard
    assert had > 0
    time.sleep(2 * LEASE)  # ... then the server is away
    store.reap(worker_silence=3 * LEASE, silence=RULE)
    # The lease keeps what it had left at the last round before the outage, no more:
    # the worker must renew it soon, as if the outage had not been.
    left = _lease(store, a.session_action_id) - store.now()
    assert 0 < left < 0.55 * LEASE
    assert left <= had
    _rounds(store, left + 0.2)  # the server listens again; the worker stays silent
    assert store.get_operation(project.id, op.id).status is OperationStatus.QUEUED


def test_a_lease_renewed_once_the_server_is_back_is_not_pushed_further(store, project):
    _, worker, a = _claimed(store, project.id)
    _rounds(store, 0.1)
    time.sleep(2 * LEASE)
    held = [Held(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch)]
    store.heartbeat(worker.id, held, WorkerStatus.RUNNING, LEASE)  # heard before the round
    renewed = _lease(store, a.session_action_id)
    store.reap(worker_silence=3 * LEASE, silence=RULE)
    moved = _lease(store, a.session_action_id)
    assert renewed <= moved <= store.now() + LEASE
    assert moved - renewed < 0.5  # moved up to the round's instant at most, not by the silence


def test_a_clock_step_while_a_round_runs_is_forgiven_by_the_next_round(store, project, monkeypatch):
    """The store's clock steps two leases forward between a round's start and its end.

    The round reaped by its starting instant, so the step is still to be forgiven: the
    next round must, though it comes only a pause after the step (the clock is the
    database's on PostgreSQL, the server's on SQLite: here the store's reading of it is
    stepped, the one seam a clock offers).
    """
    op, worker, a = _claimed(store, project.id)
    _rounds(store, 0.1)
    real = store._db_now  # type: ignore[attr-defined]
    step, readings = 2 * LEASE, 0

    def stepped_after_the_first_reading(conn):  # type: ignore[no-untyped-def]
        nonlocal readings
        readings += 1
        return real(conn) + (step if readings > 1 else 0.0)

    monkeypatch.setattr(store, "_db_now", stepped_after_the_first_reading)
    assert store.reap(worker_silence=3 * LEASE, silence=RULE) == 0
    assert readings == 2  # the round read the clock at its start and at its end
    monkeypatch.setattr(store, "_db_now", lambda conn: real(conn) + step)
    time.sleep(RULE.reap_interval)
    assert store.reap(worker_silence=3 * LEASE, silence=RULE) == 0
    assert store.get_operation(project.id, op.id).status is OperationStatus.SCHEDULED
    assert store.get_worker(project.id, worker.id).status is not WorkerStatus.NOT_RESPONDING
    assert _succeeded(store, worker.id, a.session_action_id, a.lease_epoch)
