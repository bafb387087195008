"""The status machines: no illegal transition is applied, terminal states absorb."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.models import TaskCounts
from oprun.domain.rollup import rollup
from oprun.domain.status import (
    OPERATION_TRANSITIONS,
    SESSION_ACTION_TRANSITIONS,
    OperationStatus,
    SessionActionStatus,
    WorkerStatus,
)

op_status = st.sampled_from(list(OperationStatus))
sa_status = st.sampled_from(list(SessionActionStatus))


@given(st.lists(op_status, max_size=40))
def test_walking_the_operation_machine_applies_only_allowed_transitions(attempts):
    status, history = OperationStatus.QUEUED, [OperationStatus.QUEUED]
    for target in attempts:
        if status.can_transition_to(target):
            status = target
            history.append(target)
    for before, after in pairwise(history):
        assert after in OPERATION_TRANSITIONS[before]
    if any(s.is_terminal() for s in history):
        first = next(i for i, s in enumerate(history) if s.is_terminal())
        assert first == len(history) - 1, "a terminal status was left"


@given(op_status)
def test_terminal_operation_statuses_absorb(status):
    assert status.is_terminal() == (not OPERATION_TRANSITIONS[status])
    if status.is_terminal():
        assert status.next() is None
        assert all(not status.can_transition_to(s) for s in OperationStatus)


@given(op_status, op_status)
def test_path_to_uses_only_allowed_transitions(start, target):
    path = start.path_to(target)
    if path is None:
        return
    chain = [start, *path]
    for before, after in pairwise(chain):
        assert before.can_transition_to(after)
    assert OperationStatus.CANCELING not in path[:-1]


@given(st.lists(sa_status, max_size=40))
def test_session_action_machine_absorbs_and_only_allows_listed_moves(attempts):
    status = SessionActionStatus.SCHEDULED
    for target in attempts:
        if status.can_transition_to(target):
            assert target in SESSION_ACTION_TRANSITIONS[status]
            status = target
        if status.is_terminal():
            assert not any(status.can_transition_to(s) for s in SessionActionStatus)


def test_happy_path_follows_next():
    status, seen = OperationStatus.QUEUED, []
    while status.next() is not None:
        seen.append(status)
        nxt = status.next()
        assert nxt is not None and status.can_transition_to(nxt)
        status = nxt
    assert seen == ["QUEUED", "SCHEDULED", "RUNNING"]
    assert status is OperationStatus.SUCCEEDED


counts = st.builds(
    TaskCounts,
    queued=st.integers(0, 3),
    running=st.integers(0, 3),
    succeeded=st.integers(0, 3),
    failed=st.integers(0, 3),
    canceled=st.integers(0, 3),
)


@given(op_status, counts, st.booleans())
def test_rollup_answers_a_status_the_machine_can_reach(current, task_counts, any_running):
    target = rollup(current, task_counts, any_running)
    assert current.path_to(target) is not None
    if current.is_terminal():
        assert target is current


@given(counts)
def test_rollup_of_finished_tasks_is_terminal(task_counts):
    task_counts = task_counts.model_copy(update={"queued": 0, "running": 0})
    total = task_counts.succeeded + task_counts.failed + task_counts.canceled
    target = rollup(OperationStatus.RUNNING, task_counts, False)
    assert target.is_terminal() == (total > 0)
    if task_counts.failed:
        assert target is OperationStatus.FAILED


worker_status = st.sampled_from(list(WorkerStatus))
_STOPPING_ORDER = {
    WorkerStatus.IDLE: 0,
    WorkerStatus.RUNNING: 0,
    WorkerStatus.STOPPING: 1,
    WorkerStatus.STOPPED: 2,
}


@given(st.lists(worker_status.filter(lambda s: s is not WorkerStatus.NOT_RESPONDING), max_size=30))
def test_worker_reports_in_any_order_never_go_back_from_stopping(reports):
    """Heartbeats may land out of order; a worker's status only moves towards STOPPED."""
    status = WorkerStatus.IDLE
    for reported in reports:
        before = status
        if before in reported.reported_over():
            status = reported
        assert _STOPPING_ORDER[status] >= _STOPPING_ORDER[before]
    if reports:
        assert _STOPPING_ORDER[status] == max(_STOPPING_ORDER[s] for s in reports)


@given(worker_status)
def test_a_worker_given_up_on_stays_so_whatever_it_reports(reported):
    assert WorkerStatus.NOT_RESPONDING not in reported.reported_over()
