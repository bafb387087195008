"""Issue 3's store semantics, on SQLite and PostgreSQL: steps, retries, quarantine,
priorities, concurrency limits, requirements, deadlines, sessions, silent workers."""

from __future__ import annotations

import time

import pytest

from oprun.domain.ids import new_id
from oprun.domain.models import ActionDefinition, InvocationSource, Requirements, RetryPolicy
from oprun.domain.plan import StepPlan
from oprun.domain.protocol import Report, SessionReport
from oprun.domain.status import OperationStatus, SessionActionStatus, WorkerStatus
from oprun.service.operations import params_digest
from oprun.store import NewOperation, Store


def _invoke(store: Store, project_id: str, *, n=1, plan=(), queue="default", timeout=None, **kw):
    definition = ActionDefinition(name=kw.pop("name", "a"), entrypoint="m:f", queue=queue, **kw)
    action, _ = store.save_action(project_id, definition)
    items = [
        NewOperation(
            project_id=project_id,
            action=action,
            queue=queue,
            parameters={"i": i},
            params_digest=params_digest({"i": i}),
            created_by="test",
            source_type=InvocationSource.MANUAL,
            source_id="test",
            idempotency_key=None,
            timeout=timeout,
            plan=plan,
        )
        for i in range(n)
    ]
    return [op for op, _ in store.create_operations(items)]


def _worker(store, project_id, queues=("default",), **capabilities):
    return store.register_worker(project_id, "w", "host", list(queues), capabilities)


def _report(store, worker, a, kind, **kw):
    return store.apply_reports(
        worker.id,
        [
            Report(
                session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="running"
            ),
            Report(
                session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=kind, **kw
            ),
        ],
    )


def _claim(store, worker, project, n=10, **kw):
    return store.claim(worker.id, project.id, worker.queues, n, 30, **kw)


def test_steps_run_in_dependency_order_and_counts_add_up(store, project):
    plan = [
        StepPlan("render", (), tuple({"f": {"int": str(i)}} for i in range(3))),
        StepPlan("encode", ("render",), ({},)),
    ]
    (op,) = _invoke(store, project.id, plan=plan)
    assert op.progress.counts.queued == 4
    w = _worker(store, project.id)
    first = _claim(store, w, project)
    assert sorted(a.step_id for a in first) == ["render"] * 3  # encode waits
    for a in first[:2]:
        _report(store, w, a, "succeeded")
    assert _claim(store, w, project) == []  # one render task still running
    mid = store.get_operation(project.id, op.id)
    assert mid.progress.percent == 50.0 and mid.progress.counts.succeeded == 2
    _report(store, w, first[2], "succeeded")
    (encode,) = _claim(store, w, project)
    assert encode.step_id == "encode"
    _report(store, w, encode, "succeeded", result={"out": "x.mp4"})
    done = store.get_operation(project.id, op.id)
    assert done.status is OperationStatus.SUCCEEDED and done.progress.counts.succeeded == 4
    assert done.progress.percent == 100.0 and done.result == {"out": "x.mp4"}


def test_a_failed_step_cancels_the_steps_waiting_on_it(store, project):
    plan = [
        StepPlan("a", (), ({},)),
        StepPlan("b", ("a",), ({}, {})),
        StepPlan("c", ("b",), ({},)),
    ]
    (op,) = _invoke(store, project.id, plan=plan, max_attempts=1)
    w = _worker(store, project.id)
    (a,) = _claim(store, w, project)
    _report(store, w, a, "failed", error_code="EXIT", error_message="exit 2")
    done = store.get_operation(project.id, op.id)
    assert done.status is OperationStatus.FAILED
    assert (done.progress.counts.failed, done.progress.counts.canceled) == (1, 3)
    assert done.error is not None and done.error.code == "EXIT"


def test_a_retried_failure_waits_its_backoff_then_runs_again(store, project, figure):
    policy = RetryPolicy(retry_on=["FLAKY"], backoff_seconds=0.5, backoff_max_seconds=0.5)
    (op,) = _invoke(store, project.id, retry=policy, max_attempts=3)
    w = _worker(store, project.id)
    (a,) = _claim(store, w, project)
    failed_at = time.monotonic()
    _report(store, w, a, "failed", error_code="FLAKY", error_message="try again")
    back = store.get_operation(project.id, op.id)
    assert back.status is OperationStatus.QUEUED and back.error is None
    assert _claim(store, w, project) == []  # still backing off
    while not (again := _claim(store, w, project)):
        time.sleep(0.05)
    waited = time.monotonic() - failed_at
    assert 0.25 <= waited < 2.0  # equal jitter: between half and all of 0.5 s
    assert again[0].task_id == a.task_id and again[0].attempt == 2
    _report(store, w, again[0], "failed", error_code="OTHER", error_message="not retried")
    done = store.get_operation(project.id, op.id)
    assert done.status is OperationStatus.FAILED and done.error.code == "OTHER"
    logs = [line.line for line in store.list_logs(project.id, op.id, 0, 100)]
    assert any("attempt 1 failed (FLAKY); attempt 2 in" in line for line in logs)
    figure(f"retry after a backoff of 0.5 s (equal jitter) came {waited:.2f} s later")


def test_backoff_doubles_up_to_its_cap_and_jitter_keeps_half_to_all():
    policy = RetryPolicy(backoff_seconds=1, backoff_max_seconds=10)
    assert [policy.delay(n, 0.999999) for n in (1, 2, 3, 4, 5)] == pytest.approx(
        [1, 2, 4, 8, 10], rel=1e-5
    )
    assert policy.delay(3, 0.0) == 2.0
    assert not RetryPolicy().retries("EXCEPTION") and RetryPolicy().retries("CRASHED")
    assert RetryPolicy(retry_on=["*"]).retries(None)


def _failing_on_disks(store, project, tasks: int, quarantine_after: int):
    """An operation of `tasks` tasks that retries DISK failures at once, and two workers."""
    plan = [StepPlan("s", (), tuple({"f": {"int": str(i)}} for i in range(tasks)))]
    (op,) = _invoke(
        store,
        project.id,
        plan=plan,
        max_attempts=5,
        quarantine_after=quarantine_after,
        retry=RetryPolicy(retry_on=["DISK"], backoff_seconds=0),
    )
    return op, _worker(store, project.id), _worker(store, project.id)


def test_a_worker_failing_n_tasks_in_a_row_is_quarantined_from_the_operation(store, project):
    op, bad, good = _failing_on_disks(store, project, tasks=6, quarantine_after=2)
    for _ in range(2):
        (a,) = _claim(store, bad, project, n=1)
        _report(store, bad, a, "failed", error_code="DISK", error_message="bad disk")
    assert _claim(store, bad, project) == []  # quarantined from this operation
    (other,) = _invoke(store, project.id, name="other")
    assert [a.operation_id for a in _claim(store, bad, project)] == [other.id]
    taken = _claim(store, good, project)
    assert len(taken) == 6 and {a.operation_id for a in taken} == {op.id}
    logs = [line.line for line in store.list_logs(project.id, op.id, 0, 100)]
    assert any("failed 2 tasks in a row" in line for line in logs)


def test_queues_are_served_by_priority_within_their_concurrency_limit(store, project):
    store.configure_queue(project.id, "urgent", priority=10, max_concurrency=2)
    store.configure_queue(project.id, "bulk", priority=0, max_concurrency=None)
    bulk = _invoke(store, project.id, n=3, queue="bulk", name="b")
    urgent = _invoke(store, project.id, n=3, queue="urgent", name="u")
    w = _worker(store, project.id, queues=("bulk", "urgent"))
    taken = _claim(store, w, project, n=4)
    ids = [a.operation_id for a in taken]
    urgent_ids, bulk_ids = {op.id for op in urgent}, {op.id for op in bulk}
    assert set(ids[:2]) <= urgent_ids  # urgent first, but only 2 at once
    assert set(ids[2:]) <= bulk_ids and len(set(ids)) == 4
    _report(store, w, taken[0], "succeeded")
    (next_one,) = _claim(store, w, project, n=1)
    assert next_one.operation_id == (urgent_ids - set(ids)).pop()  # a place freed in urgent


def test_tasks_go_only_to_workers_that_meet_their_requirements(store, project):
    needs = Requirements(gpus=1, memory_mb=8000, tags=["cuda"])
    (gpu_op,) = _invoke(store, project.id, requirements=needs, name="g")
    (plain_op,) = _invoke(store, project.id, name="p")
    small = _worker(store, project.id, gpus=1, memory_mb=4000, tags=["cuda"])
    big = _worker(store, project.id, gpus=2, memory_mb=64000, tags=["cuda", "ssd"])
    assert [a.operation_id for a in _claim(store, small, project)] == [plain_op.id]
    assert [a.operation_id for a in _claim(store, big, project)] == [gpu_op.id]


def test_an_operation_past_its_deadline_fails_with_timeout(store, project):
    (queued,) = _invoke(store, project.id, timeout=0.2, name="q")
    (running,) = _invoke(store, project.id, timeout=0.2, name="r")
    w = _worker(store, project.id)
    (a,) = store.claim(w.id, project.id, ["default"], 1, 30, operation_id=running.id)
    store.apply_reports(
        w.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="running")],
    )
    time.sleep(0.3)
    assert store.time_out_operations() == 2
    assert store.get_operation(project.id, queued.id).status is OperationStatus.FAILED
    canceling = store.get_operation(project.id, running.id)
    assert canceling.status is OperationStatus.CANCELING  # the worker is told to stop it
    cancel, _ = store.heartbeat(w.id, [_held(a)], WorkerStatus.RUNNING, 30)
    assert cancel == [a.session_action_id]
    store.apply_reports(
        w.id,
        [Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="canceled")],
    )
    done = store.get_operation(project.id, running.id)
    assert done.status is OperationStatus.FAILED and done.exit_reason == "TIMEOUT"
    assert done.error is not None and done.error.code == "TIMEOUT"


def _held(a):
    from oprun.domain.protocol import Held

    return Held(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch)


def _env(session_id, sa_id, status, name="JobEnv", kind="envEnter"):
    return SessionReport(
        session_id=session_id,
        session_action_id=sa_id,
        definition={kind: {"environmentId": name}},
        status=status,
    )


def test_a_session_keeps_its_environments_across_its_tasks(store, project):
    plan = [StepPlan("s", (), tuple({"f": {"int": str(i)}} for i in range(3)))]
    (op,) = _invoke(store, project.id, plan=plan)
    w = _worker(store, project.id)
    (first,) = _claim(store, w, project, n=1)
    session = first.session_id
    enter = new_id("session_action")
    assert store.apply_session_reports(w.id, [_env(session, enter, "RUNNING")])[0].accepted
    assert store.apply_session_reports(w.id, [_env(session, enter, "SUCCEEDED")])[0].accepted
    _report(store, w, first, "succeeded")
    more = []
    while got := store.claim(
        w.id, project.id, ["default"], 1, 30, operation_id=op.id, session_id=session, step_id="s"
    ):
        more += got
        _report(store, w, got[0], "succeeded")
    assert len(more) == 2 and {a.session_id for a in more} == {session}
    leave = new_id("session_action")
    store.apply_session_reports(
        w.id, [_env(session, leave, "SUCCEEDED", kind="envExit")], [session]
    )
    actions = store.list_session_actions(project.id, op.id)
    kinds = [next(iter(sa.definition)) for sa in actions]
    assert (
        kinds.count("envEnter") == 1 and kinds.count("taskRun") == 3 and kinds.count("envExit") == 1
    )
    assert {sa.session_id for sa in actions} == {session}
    late = store.apply_session_reports(w.id, [_env(session, new_id("session_action"), "RUNNING")])
    assert not late[0].accepted and late[0].reason == "session has ended"
    assert (
        store.claim(w.id, project.id, ["default"], 1, 30, operation_id=op.id, session_id=session)
        == []
    )


def test_a_lapsed_lease_ends_its_session_and_interrupts_its_environments(store, project):
    _invoke(store, project.id)
    w = _worker(store, project.id)
    # A claim takes nothing for a worker silent for its lease, so the lease must
    # outlast the time from registration to claim on a loaded machine.
    (a,) = store.claim(w.id, project.id, ["default"], 1, 1.0)
    enter = new_id("session_action")
    store.apply_session_reports(w.id, [_env(a.session_id, enter, "RUNNING")])
    time.sleep(1.2)
    assert store.reap(worker_silence=60) == 1
    env = store.get_session_action(project.id, enter)
    assert env.status is SessionActionStatus.INTERRUPTED
    late = store.apply_session_reports(w.id, [_env(a.session_id, enter, "SUCCEEDED")])
    assert not late[0].accepted


def test_a_silent_worker_that_comes_back_has_its_attempts_ended(store, project):
    _invoke(store, project.id, n=2)
    w = _worker(store, project.id)
    taken = _claim(store, w, project)
    time.sleep(0.15)
    store.reap(worker_silence=0.1)
    assert store.get_worker(project.id, w.id).status is WorkerStatus.NOT_RESPONDING
    assert store.abandon_worker(w.id) == 2
    refused = _report(store, w, taken[0], "succeeded")
    assert not any(o.accepted for o in refused)
    other = _worker(store, project.id)
    assert len(_claim(store, other, project)) == 2  # requeued, attempt counted


def test_work_given_back_before_it_started_was_never_attempted(store, project):
    _invoke(store, project.id, n=2)
    w = _worker(store, project.id)
    started, unstarted = _claim(store, w, project)
    store.apply_reports(
        w.id,
        [
            Report(
                session_action_id=started.session_action_id,
                lease_epoch=started.lease_epoch,
                kind="running",
            )
        ],
    )
    assert store.release_worker(w.id) == 2
    statuses = {
        a.session_action_id: store.get_session_action(project.id, a.session_action_id).status
        for a in (started, unstarted)
    }
    assert statuses[started.session_action_id] is SessionActionStatus.INTERRUPTED
    assert statuses[unstarted.session_action_id] is SessionActionStatus.NEVER_ATTEMPTED
    other = _worker(store, project.id)
    assert len(_claim(store, other, project)) == 2  # both claimable at once


def test_a_claim_is_exhaustive_only_when_no_worker_of_its_queues_could_find_more(store, project):
    """`Claimed.exhaustive`: whether parked claims of other workers may skip their look."""
    plain, gpu = _worker(store, project.id), _worker(store, project.id, gpus=1)
    empty = _claim(store, plain, project)
    assert empty == [] and empty.exhaustive  # nothing waits, for anyone
    (op,) = _invoke(store, project.id, name="p")
    took = _claim(store, plain, project)
    assert [a.operation_id for a in took] == [op.id] and took.exhaustive  # all there was
    # A task it cannot take (requirements) may be another worker's.
    (needs_gpu,) = _invoke(store, project.id, requirements=Requirements(gpus=1), name="g")
    passed = _claim(store, plain, project)
    assert passed == [] and not passed.exhaustive
    by_gpu = _claim(store, gpu, project)
    assert [a.operation_id for a in by_gpu] == [needs_gpu.id] and by_gpu.exhaustive
    # A claim for one operation's tasks sees no others.
    (single,) = _invoke(store, project.id, name="s")
    one = store.claim(plain.id, project.id, ["default"], 5, 30, operation_id=single.id)
    assert len(one) == 1 and not one.exhaustive
    # A queue with a concurrency limit frees room without a publication.
    store.configure_queue(project.id, "limited", priority=0, max_concurrency=1)
    limited = _worker(store, project.id, queues=("limited",))
    assert not _claim(store, limited, project).exhaustive


def test_a_quarantined_worker_claims_exhaustively_no_more(store, project):
    """Tasks hidden from a quarantined worker may be another's, so its claims never are."""
    _, bad, good = _failing_on_disks(store, project, tasks=3, quarantine_after=1)
    (a,) = _claim(store, bad, project, n=1)
    _report(store, bad, a, "failed", error_code="DISK", error_message="bad disk")
    hidden = _claim(store, bad, project)
    assert hidden == [] and not hidden.exhaustive  # quarantined: 3 tasks it cannot see
    taken = _claim(store, good, project)
    assert len(taken) == 3 and taken.exhaustive
