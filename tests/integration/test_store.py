"""The store contract, on SQLite and PostgreSQL: races, leases, cancel, idempotency."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import pytest
from sqlalchemy import create_engine, pool, text

from oprun.domain.models import ActionDefinition, InvocationSource, RetryPolicy
from oprun.domain.params import ParameterSpec
from oprun.domain.protocol import Held, Report
from oprun.domain.status import OperationStatus, SessionActionStatus, WorkerStatus
from oprun.service.operations import params_digest
from oprun.store import NewOperation, Store, open_store
from oprun.store.base import at
from oprun.store.invocations import StaleAction
from oprun.store.migrate import sqlalchemy_url
from oprun.store.notify import work_key


def _definition(**kw):
    return ActionDefinition(
        name="a", entrypoint="m:f", parameters=[ParameterSpec(name="x", type="int")], **kw
    )


def _invoke(store: Store, project_id: str, n: int = 1, key: str | None = None, **kw):
    action, _ = store.save_action(project_id, _definition(**kw))
    items = [
        NewOperation(
            project_id=project_id,
            action=action,
            queue="default",
            parameters={"x": i},
            params_digest=params_digest({"x": i}),
            created_by="test",
            source_type=InvocationSource.MANUAL,
            source_id="test",
            idempotency_key=key,
            timeout=None,
        )
        for i in range(n)
    ]
    return [op for op, _ in store.create_operations(items)]


def _worker(store, project_id):
    return store.register_worker(project_id, "w", "host", ["default"], {})


def _history_is_legal(store, project_id, op_id):
    op = store.get_operation(project_id, op_id)
    statuses = [OperationStatus(h.status) for h in op.history]
    for before, after in pairwise(statuses):
        assert before.can_transition_to(after), f"{before} -> {after} in {statuses}"
    return op


def test_saving_the_same_definition_twice_keeps_one_version(store, project):
    first, created = store.save_action(project.id, _definition())
    again, created_again = store.save_action(project.id, _definition())
    changed, created_changed = store.save_action(project.id, _definition(timeout=5))
    assert created and not created_again and created_changed
    assert first.version == again.version == 1 and changed.version == 2
    assert first.digest == again.digest != changed.digest


def test_an_idempotency_key_yields_one_operation(store, project):
    (first,) = _invoke(store, project.id, key="k1")
    (second,) = _invoke(store, project.id, key="k1")
    assert first.id == second.id
    assert len(store.list_operations(project.id)) == 1


def _dangling(database_url: str) -> int:
    """Operations whose queue or version names no row (they have no foreign keys to them)."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM operations o "
                    "WHERE NOT EXISTS (SELECT 1 FROM queues q WHERE q.id = o.queue_id) "
                    "OR NOT EXISTS (SELECT 1 FROM action_versions v "
                    "WHERE v.id = o.action_version_id)"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def _erase(database_url: str, sql: str) -> None:
    """Delete rows as a database restored from an earlier backup would not have them."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def test_a_cached_queue_id_whose_row_is_gone_gets_a_queue_again(store, project, database_url):
    _invoke(store, project.id)  # the store now knows the queue's id
    _erase(database_url, "DELETE FROM tasks")
    _erase(database_url, "DELETE FROM operations")
    _erase(database_url, "DELETE FROM queues")
    ops = _invoke(store, project.id, n=3)
    assert len(ops) == 3 and _dangling(database_url) == 0
    assert {op.queue for op in ops} == {"default"}


def test_an_action_version_that_is_gone_is_never_named_by_an_operation(
    store, project, database_url
):
    action, _ = store.save_action(project.id, _definition())
    _erase(database_url, "DELETE FROM action_versions")
    item = NewOperation(
        project_id=project.id,
        action=action,
        queue="default",
        parameters={"x": 1},
        params_digest=params_digest({"x": 1}),
        created_by="test",
        source_type=InvocationSource.MANUAL,
        source_id="test",
        idempotency_key=None,
        timeout=None,
    )
    with pytest.raises(StaleAction) as raised:
        store.create_operations([item])
    assert raised.value.names == [(project.id, "a")]
    assert store.list_operations(project.id) == [] and _dangling(database_url) == 0


def test_concurrent_claims_never_hand_out_a_task_twice(store, project):
    _invoke(store, project.id, n=60)
    workers = [_worker(store, project.id) for _ in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def claim(worker):
        for _ in range(30):
            assignments = store.claim(worker.id, project.id, ["default"], 5, 30)
            with lock:
                got.extend(a.task_id for a in assignments)

    threads = [threading.Thread(target=claim, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 60 and len(set(got)) == 60


def _run(store, worker, assignment, kind="succeeded", **kw):
    reports = [
        Report(
            session_action_id=assignment.session_action_id,
            lease_epoch=assignment.lease_epoch,
            kind="running",
        ),
        Report(
            session_action_id=assignment.session_action_id,
            lease_epoch=assignment.lease_epoch,
            kind=kind,
            **kw,
        ),
    ]
    return store.apply_reports(worker.id, reports)


def test_a_finished_operation_carries_result_history_and_counts(store, project):
    (op,) = _invoke(store, project.id)
    worker = _worker(store, project.id)
    (a,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    outcomes = _run(store, worker, a, result={"ok": 1})
    assert all(o.accepted for o in outcomes)
    done = _history_is_legal(store, project.id, op.id)
    assert done.status is OperationStatus.SUCCEEDED and done.result == {"ok": 1}
    assert [h.status for h in done.history] == ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
    assert done.progress.counts.succeeded == 1 and done.progress.counts.running == 0
    sa = store.get_session_action(project.id, a.session_action_id)
    assert sa.status is SessionActionStatus.SUCCEEDED
    assert sa.definition["taskRun"]["parameters"] == {"x": {"int": "0"}}


def test_an_operation_read_carries_its_history_exactly_in_one_round_trip(store, project):
    (op,) = _invoke(store, project.id)
    worker = _worker(store, project.id)
    (a,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    _run(store, worker, a, result={"ok": 1})
    with store.engine.connect() as conn:
        expected = conn.execute(
            text(
                "SELECT status, detail, at FROM status_history WHERE entity_id = :id ORDER BY seq"
            ),
            {"id": op.id},
        ).all()
    before = store.database_calls()
    done = store.get_operation(project.id, op.id)
    after = store.database_calls()
    assert [(h.status, h.detail, h.at) for h in done.history] == [
        (status, detail, at(when)) for status, detail, when in expected
    ]
    if store.dialect_name == "postgresql":  # no BEGIN or COMMIT: the SELECT is the read
        assert (after.statements - before.statements, after.round_trips - before.round_trips) == (
            1,
            1,
        )


def test_a_claim_and_a_report_write_in_the_statement_that_ends_them(store, project):
    if store.dialect_name != "postgresql":
        pytest.skip("SQLite writes in process: a statement per table costs no round trip")
    ops = _invoke(store, project.id, n=4)
    worker = _worker(store, project.id)
    # The first claim also reads the action's definition and marks the worker RUNNING.
    (first,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    ops = [op for op in ops if op.id != first.operation_id]
    store._clock.resync = 3600.0  # no reading of the clock inside what is counted

    def statements(call):
        before = store.database_calls()
        answer = call()
        return store.database_calls().statements - before.statements, answer

    # The worker and its queues, the waiting tasks; then every write at once.
    n, claimed = statements(lambda: store.claim(worker.id, project.id, ["default"], 3, 30))
    assert (n, len(claimed)) == (3, 3)
    reports = [
        Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=kind)
        for a in claimed
        for kind in ("running", "succeeded")
    ]
    # The operations and attempts locked; then every write at once.
    n, outcomes = statements(lambda: store.apply_reports(worker.id, reports))
    assert n == 3 and all(o.accepted for o in outcomes)
    for op in ops:
        done = _history_is_legal(store, project.id, op.id)
        assert done.status is OperationStatus.SUCCEEDED
        assert [h.status for h in done.history] == ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
        assert done.progress.counts.succeeded == 1 and done.attempts == 1
    for a in claimed:
        sa = store.get_session_action(project.id, a.session_action_id)
        assert sa.status is SessionActionStatus.SUCCEEDED and sa.ended_at is not None


def test_the_first_terminal_report_wins_and_late_reports_change_nothing(store, project):
    (op,) = _invoke(store, project.id)
    worker = _worker(store, project.id)
    (a,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    _run(store, worker, a, result=1)
    late = store.apply_reports(
        worker.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="failed")],
    )
    assert not late[0].accepted and "SUCCEEDED" in (late[0].reason or "")
    assert store.get_operation(project.id, op.id).status is OperationStatus.SUCCEEDED


def test_a_lapsed_lease_requeues_and_fences_off_the_old_attempt(store, project):
    (op,) = _invoke(store, project.id)
    w1 = _worker(store, project.id)
    (a,) = store.claim(w1.id, project.id, ["default"], 1, 1.0)
    time.sleep(1.2)
    assert store.reap(worker_silence=0.5) == 1
    assert store.get_operation(project.id, op.id).status is OperationStatus.QUEUED
    assert store.get_worker(project.id, w1.id).status is WorkerStatus.NOT_RESPONDING
    assert store.claim(w1.id, project.id, ["default"], 1, 30) == []  # silent workers take none
    w2 = _worker(store, project.id)
    (b,) = store.claim(w2.id, project.id, ["default"], 1, 30)
    assert b.task_id == a.task_id and b.lease_epoch == a.lease_epoch + 1
    stale = _run(store, w1, a, result="stale")
    assert not any(o.accepted for o in stale)
    cancel, lost = store.heartbeat(
        w1.id,
        [Held(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch)],
        WorkerStatus.RUNNING,
        30,
    )
    assert lost == [a.session_action_id] and cancel == []
    _run(store, w2, b, result="fresh")
    done = _history_is_legal(store, project.id, op.id)
    assert done.result == "fresh" and done.attempts == 2


def test_attempts_run_out_and_the_operation_fails(store, project):
    (op,) = _invoke(store, project.id, max_attempts=1)
    worker = _worker(store, project.id)
    assert len(store.claim(worker.id, project.id, ["default"], 1, 1.0)) == 1
    time.sleep(1.2)
    store.reap(worker_silence=60)
    done = _history_is_legal(store, project.id, op.id)
    assert done.status is OperationStatus.FAILED
    assert done.error is not None and done.error.code == "LEASE_EXPIRED"


def test_cancel_of_queued_work_is_immediate(store, project):
    (op,) = _invoke(store, project.id)
    store.cancel_operation(project.id, op.id, "test")
    done = _history_is_legal(store, project.id, op.id)
    assert done.status is OperationStatus.CANCELED
    assert store.claim(_worker(store, project.id).id, project.id, ["default"], 1, 30) == []


def test_cancel_of_running_work_reaches_its_worker_by_heartbeat(store, project):
    (op,) = _invoke(store, project.id)
    worker = _worker(store, project.id)
    (a,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    store.apply_reports(
        worker.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="running")],
    )
    store.cancel_operation(project.id, op.id, "test")
    assert store.get_operation(project.id, op.id).status is OperationStatus.CANCELING
    held = [Held(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch)]
    cancel, lost = store.heartbeat(worker.id, held, WorkerStatus.RUNNING, 30)
    assert cancel == [a.session_action_id] and lost == []
    store.apply_reports(
        worker.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="canceled")],
    )
    done = _history_is_legal(store, project.id, op.id)
    assert done.status is OperationStatus.CANCELED


def test_a_heartbeat_sent_before_stopping_does_not_undo_it(store, project):
    """A long-polled heartbeat (RUNNING) answered after the STOPPING one must not
    make the worker look available again: its parked claim would take new work."""
    _invoke(store, project.id)
    worker = _worker(store, project.id)
    store.heartbeat(worker.id, [], WorkerStatus.STOPPING, 30)
    store.heartbeat(worker.id, [], WorkerStatus.RUNNING, 30)
    assert store.get_worker(project.id, worker.id).status is WorkerStatus.STOPPING
    assert store.claim(worker.id, project.id, ["default"], 1, 30) == []
    store.heartbeat(worker.id, [], WorkerStatus.STOPPED, 30)
    store.heartbeat(worker.id, [], WorkerStatus.STOPPING, 30)
    assert store.get_worker(project.id, worker.id).status is WorkerStatus.STOPPED


def test_cancel_racing_completion_ends_in_exactly_one_terminal_state(store, project):
    ops = _invoke(store, project.id, n=40)
    worker = _worker(store, project.id)
    assignments = store.claim(worker.id, project.id, ["default"], 40, 30)
    for a in assignments:
        store.apply_reports(
            worker.id,
            [
                Report(
                    session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="running"
                )
            ],
        )

    def complete():
        for a in assignments:
            store.apply_reports(
                worker.id,
                [
                    Report(
                        session_action_id=a.session_action_id,
                        lease_epoch=a.lease_epoch,
                        kind="succeeded",
                        result=1,
                    )
                ],
            )

    def cancel():
        for op in ops:
            try:
                store.cancel_operation(project.id, op.id, "race")
            except Exception as exc:  # Conflict when completion won
                assert "already SUCCEEDED" in str(exc)

    threads = [threading.Thread(target=complete), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in assignments:  # the worker honours any cancel that got through
        store.apply_reports(
            worker.id,
            [
                Report(
                    session_action_id=a.session_action_id,
                    lease_epoch=a.lease_epoch,
                    kind="canceled",
                )
            ],
        )
    for op in ops:
        done = _history_is_legal(store, project.id, op.id)
        assert done.status in (OperationStatus.SUCCEEDED, OperationStatus.CANCELED)
        terminal = [h for h in done.history if OperationStatus(h.status).is_terminal()]
        assert len(terminal) == 1


def test_released_work_is_claimable_at_once_without_spending_an_attempt(store, project):
    (op,) = _invoke(store, project.id, max_attempts=1)
    worker = _worker(store, project.id)
    (a,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    store.apply_reports(
        worker.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="released")],
    )
    (b,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    assert b.task_id == a.task_id
    _run(store, worker, b, result=2)
    assert store.get_operation(project.id, op.id).status is OperationStatus.SUCCEEDED


def test_a_claim_that_leaves_work_it_locked_wakes_the_claims_that_skipped_it(store, project):
    # A claim locks a few more waiting tasks than it takes; a claim made meanwhile
    # skips them (SKIP LOCKED) and sleeps. Once the first commits, the sleepers must
    # be told to look again, or a short queue waits for the next invocation.
    _invoke(store, project.id, n=12)
    worker = _worker(store, project.id)
    woken = threading.Event()
    store.notifier.subscribe(work_key(project.id), woken.set)
    time.sleep(0.3)  # the invocation's own wake-up (a NOTIFY on PostgreSQL) has arrived
    woken.clear()
    assert len(store.claim(worker.id, project.id, ["default"], 1, 30)) == 1
    assert woken.wait(5), "the claim left 11 tasks waiting and woke no parked claim"


def test_the_reaper_wakes_claims_for_work_that_came_due_not_for_work_just_created(store, project):
    since = store.wake_for_due_retries(0.0)
    heard: list[str] = []
    store.notifier.subscribe(work_key(project.id), lambda: heard.append("woken"))
    (op,) = _invoke(
        store, project.id, retry=RetryPolicy(retry_on=["*"], backoff_seconds=0), max_attempts=2
    )
    time.sleep(0.3)  # the invocation's own wake-up (a NOTIFY on PostgreSQL) has arrived
    heard.clear()
    since = store.wake_for_due_retries(since)
    assert heard == [], "the reaper woke the claims again for a task its creation announced"
    worker = _worker(store, project.id)
    (first,) = store.claim(worker.id, project.id, ["default"], 1, 30)
    _run(store, worker, first, kind="failed", error_code="BOOM")
    time.sleep(0.3)
    heard.clear()
    store.wake_for_due_retries(since)  # the retry, after a backoff of zero, came due since
    assert heard, "a retry that came due woke no claim"
    assert store.get_operation(project.id, op.id).status is OperationStatus.QUEUED


def test_a_commit_wakes_its_own_process_at_once_and_others_once(store, project, database_url):
    # This process's waiters hear a commit's keys as it returns, not after a trip
    # through the database; another process hears them by NOTIFY; none hears twice.
    heard: list[str] = []
    store.notifier.subscribe(work_key(project.id), lambda: heard.append("here"))
    other = open_store(database_url) if store.dialect_name == "postgresql" else None
    try:
        if other is not None:
            other.notifier.subscribe(work_key(project.id), lambda: heard.append("there"))
        _invoke(store, project.id)
        assert "here" in heard  # published at commit, before any NOTIFY could come back
        time.sleep(0.5)  # the NOTIFY has come back here, and reached the other process
        assert sorted(heard) == (["here", "there"] if other is not None else ["here"])
    finally:
        if other is not None:
            other.close()


def test_another_projects_operation_is_not_found(store, project):
    (op,) = _invoke(store, project.id)
    other = store.create_project("other")
    from oprun.domain.errors import NotFound

    with pytest.raises(NotFound):
        store.get_operation(other.id, op.id)
    with pytest.raises(NotFound):
        store.cancel_operation(other.id, op.id, "x")


def test_queue_stats_count_depth_running_and_the_last_hours_throughput(store, project):
    _invoke(store, project.id, n=5)
    worker = _worker(store, project.id)
    claimed = store.claim(worker.id, project.id, ["default"], 3, 30)
    assert len(claimed) == 3
    _run(store, worker, claimed[0], result=1)
    _run(store, worker, claimed[1], kind="failed", error_code="E", error_message="boom")
    waiting = [op for op in store.list_operations(project.id, status=OperationStatus.QUEUED)]
    store.cancel_operation(project.id, waiting[0].id, "test")
    other = store.create_project("other")
    _invoke(store, other.id, n=2)  # another project's work is not counted

    (default,) = store.queue_stats(project.id)
    assert default.name == "default" and default.priority == 0
    assert default.depth == 1  # 5 invoked, 3 claimed, 1 canceled while queued
    assert default.running == 1  # claimed[2] is SCHEDULED
    assert default.succeeded == 1 and default.failed == 1
    assert len(default.throughput) == 60
    assert sum(default.throughput) == 3  # succeeded, failed, canceled
    assert default.throughput[-1] == 3  # all ended within the current minute
    assert abs(default.at.timestamp() - store.now()) < 60
    (theirs,) = store.queue_stats(other.id)
    assert theirs.depth == 2 and theirs.running == 0 and sum(theirs.throughput) == 0


def test_queue_throughput_puts_each_end_in_its_minute_and_forgets_older_ones(store, project):
    from sqlalchemy import update

    from oprun.store import schema as t

    ops = _invoke(store, project.id, n=3)
    for op in ops:
        store.cancel_operation(project.id, op.id, "test")
    now = store.now()
    backdate = {ops[0].id: now - 90 * 60, ops[1].id: now - 30 * 60 - 30}
    with store.engine.begin() as conn:
        for op_id, when in backdate.items():
            conn.execute(
                update(t.tasks).where(t.tasks.c.operation_id == op_id).values(updated_at=when)
            )
    (default,) = store.queue_stats(project.id)
    assert sum(default.throughput) == 2  # the one 90 minutes ago is out of the window
    assert default.throughput[29] == 1 and default.throughput[-1] == 1
    assert default.depth == 0 and default.succeeded == default.failed == 0
