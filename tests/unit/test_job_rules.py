"""The job rules the store applies, without a database: retries, steps, quarantine, claims."""

from __future__ import annotations

import pytest

from oprun.domain.assignment import (
    Candidate,
    QueueLoad,
    attempt_timeout,
    choose,
    fits,
    may_claim,
    room_left,
    serving_order,
    task_parameters,
)
from oprun.domain.models import ActionDefinition, ActionKind, Requirements, RetryPolicy
from oprun.domain.params import ParameterSpec
from oprun.domain.policy import (
    operation_policy,
    quarantine_after,
    requirements_of,
    retry_policy,
)
from oprun.domain.quarantine import is_quarantined, quarantine_message
from oprun.domain.retry import (
    AfterInterruption,
    after_interruption,
    gave_up_message,
    interrupted_status,
    retry_after_failure,
)
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.domain.steps import StepTally, release_steps

# -- policies kept by an operation ---------------------------------------------------------


def test_an_operation_keeps_its_actions_retry_and_quarantine_policies_as_json():
    definition = ActionDefinition(
        name="a",
        entrypoint="m:f",
        retry=RetryPolicy(retry_on=["BOOM"], backoff_seconds=2),
        quarantine_after=5,
    )
    kept = operation_policy(definition)
    assert kept["quarantine_after"] == 5
    assert retry_policy(kept) == definition.retry
    assert quarantine_after(kept) == 5


def test_an_operation_without_kept_policies_gets_the_defaults():
    assert retry_policy(None) == RetryPolicy()
    assert retry_policy({}) == RetryPolicy()
    assert quarantine_after(None) == 3
    assert quarantine_after({"retry": {}}) == 3


def test_python_actions_without_requirements_need_nothing_of_a_worker():
    assert requirements_of(ActionDefinition(name="a", entrypoint="m:f")) is None


def test_openjd_actions_need_a_worker_that_runs_openjd():
    definition = ActionDefinition(name="a", kind=ActionKind.OPENJD, command=["true"])
    assert requirements_of(definition) == {"kind": "openjd"}


def test_requirements_are_kept_with_every_field():
    definition = ActionDefinition(
        name="a", entrypoint="m:f", requirements=Requirements(gpus=1, tags=["cuda"])
    )
    assert requirements_of(definition) == {"cpus": 0, "memory_mb": 0, "gpus": 1, "tags": ["cuda"]}


# -- retries ------------------------------------------------------------------------------


def test_a_failure_with_a_retried_code_runs_again_after_its_backoff():
    policy = RetryPolicy(retry_on=["BOOM"], backoff_seconds=2, backoff_max_seconds=60)
    retry = retry_after_failure(policy, attempts=2, max_attempts=3, error_code="BOOM", jitter=0.0)
    assert retry is not None
    assert retry.delay == 2.0  # 2 s doubled once, halved by the least jitter
    assert retry.message == "attempt 2 failed (BOOM); attempt 3 in 2.0 s"


def test_a_failure_without_a_code_is_retried_as_failed():
    policy = RetryPolicy(retry_on=["FAILED"], backoff_seconds=1)
    retry = retry_after_failure(policy, attempts=1, max_attempts=3, error_code=None, jitter=0.5)
    assert retry is not None and "(FAILED)" in retry.message


def test_a_failure_with_a_code_not_retried_is_final():
    policy = RetryPolicy(retry_on=["CRASHED"])
    assert retry_after_failure(policy, 1, 3, "BOOM", 0.5) is None


def test_a_failure_of_the_last_attempt_is_final():
    policy = RetryPolicy(retry_on=["*"])
    assert retry_after_failure(policy, 3, 3, "BOOM", 0.5) is None


@pytest.mark.parametrize(
    ("task", "attempts", "given_back", "expected"),
    [
        (OS.CANCELING, 1, False, AfterInterruption.CANCELED),
        (OS.CANCELING, 1, True, AfterInterruption.CANCELED),
        (OS.RUNNING, 3, True, AfterInterruption.GIVEN_BACK),
        (OS.SCHEDULED, 2, False, AfterInterruption.REQUEUED),
        (OS.RUNNING, 3, False, AfterInterruption.GAVE_UP),
    ],
)
def test_what_becomes_of_a_task_whose_attempt_was_interrupted(task, attempts, given_back, expected):
    assert after_interruption(task, attempts, 3, given_back=given_back) is expected


def test_an_attempt_given_back_before_it_started_was_never_attempted():
    assert interrupted_status(SAS.ASSIGNED, given_back=True) is SAS.NEVER_ATTEMPTED
    assert interrupted_status(SAS.RUNNING, given_back=True) is SAS.INTERRUPTED
    assert interrupted_status(SAS.ASSIGNED, given_back=False) is SAS.INTERRUPTED


def test_a_task_given_up_after_interruptions_says_how_many_attempts_it_had():
    assert gave_up_message("lease expired", 3) == "lease expired; gave up after 3 attempt(s)"


# -- steps --------------------------------------------------------------------------------

CHAIN = {"a": [], "b": ["a"], "c": ["b"]}


def test_a_step_is_released_once_every_task_of_its_dependencies_succeeded():
    tallies = [
        StepTally("a", OS.SUCCEEDED, 2),
        StepTally("b", OS.QUEUED, 1, waiting=1),
        StepTally("c", OS.QUEUED, 1, waiting=1),
    ]
    release = release_steps(CHAIN, tallies)
    assert release.ready == ["b"] and release.never == []


def test_a_step_waits_while_a_task_of_its_dependency_has_not_succeeded():
    tallies = [
        StepTally("a", OS.SUCCEEDED, 1),
        StepTally("a", OS.RUNNING, 1),
        StepTally("b", OS.QUEUED, 1, waiting=1),
    ]
    assert release_steps({"a": [], "b": ["a"]}, tallies).ready == []


def test_steps_downstream_of_a_failure_will_never_run():
    tallies = [
        StepTally("a", OS.SUCCEEDED, 1),
        StepTally("b", OS.FAILED, 1),
        StepTally("c", OS.QUEUED, 1, waiting=1),
    ]
    release = release_steps(CHAIN, tallies)
    assert release.ready == [] and release.never == ["c"]


def test_a_released_step_is_not_released_again():
    tallies = [StepTally("a", OS.SUCCEEDED, 1), StepTally("b", OS.QUEUED, 1, waiting=0)]
    assert release_steps({"a": [], "b": ["a"]}, tallies).ready == []


# -- quarantine ---------------------------------------------------------------------------


def test_a_worker_is_quarantined_after_its_last_attempts_all_failed():
    assert is_quarantined([SAS.FAILED] * 3, 3)
    assert is_quarantined([SAS.FAILED, SAS.FAILED, SAS.FAILED, SAS.SUCCEEDED], 3)


def test_one_success_among_the_last_attempts_spares_the_worker():
    assert not is_quarantined([SAS.FAILED, SAS.SUCCEEDED, SAS.FAILED], 3)
    assert not is_quarantined([SAS.FAILED, SAS.INTERRUPTED, SAS.FAILED], 3)


def test_too_few_failures_or_no_quarantine_spare_the_worker():
    assert not is_quarantined([SAS.FAILED] * 2, 3)
    assert not is_quarantined([SAS.FAILED] * 5, 0)


def test_the_quarantine_message_names_the_worker_and_the_count():
    assert quarantine_message("worker_1", 3).startswith("worker worker_1 failed 3 tasks in a row")


# -- claims -------------------------------------------------------------------------------


def test_only_a_live_worker_that_heartbeat_within_a_lease_may_claim():
    assert may_claim(WorkerStatus.IDLE, 95.0, now=100.0, lease_seconds=10)
    assert may_claim(WorkerStatus.RUNNING, 90.0, now=100.0, lease_seconds=10)
    assert not may_claim(WorkerStatus.RUNNING, 89.0, now=100.0, lease_seconds=10)
    assert not may_claim(WorkerStatus.IDLE, None, now=100.0, lease_seconds=10)
    for status in (WorkerStatus.STOPPING, WorkerStatus.STOPPED, WorkerStatus.NOT_RESPONDING):
        assert not may_claim(status, 100.0, now=100.0, lease_seconds=10)


def test_requirements_are_matched_against_capabilities_and_kinds():
    assert fits(None, {})
    assert fits({}, {})
    assert fits({"gpus": 1, "tags": ["cuda"]}, {"gpus": 2, "tags": ["cuda", "x"]})
    assert not fits({"gpus": 1}, {"gpus": 0})
    assert not fits({"tags": ["cuda"]}, {"tags": []})
    assert not fits({"kind": "openjd"}, {})  # a worker that says nothing runs only python
    assert fits({"kind": "openjd"}, {"kinds": ["python", "openjd"]})
    assert fits({"kind": "python"}, {})


def test_queues_are_served_by_priority_and_full_ones_skipped():
    queues = [
        QueueLoad("q_hi", 10, None),
        QueueLoad("q_full", 5, 2, busy=2),
        QueueLoad("q_mid", 5, 3, busy=1),
        QueueLoad("q_zero", 1, 0),
        QueueLoad("q_lo", 0, None),
    ]
    assert serving_order(queues) == [["q_hi"], ["q_mid"], ["q_lo"]]
    assert room_left(queues) == {"q_full": 0, "q_mid": 2}


def test_a_claim_passes_over_tasks_it_cannot_take_and_stops_at_want():
    candidates = [
        Candidate("t1", "q", {"gpus": 1}),
        Candidate("t2", "q", None),
        Candidate("t3", "limited", None),
        Candidate("t4", "limited", None),
        Candidate("t5", "q", None),
        Candidate("t6", "q", None),
    ]
    taken, left = choose(candidates, {}, {"limited": 1}, want=3)
    assert taken == ["t2", "t3", "t5"]
    assert left == {"limited": 0}


def test_an_attempts_timeout_is_its_actions_cut_short_by_the_deadline():
    assert attempt_timeout(None, None, now=100.0) is None
    assert attempt_timeout(30.0, None, now=100.0) == 30.0
    assert attempt_timeout(None, 110.0, now=100.0) == 10.0
    assert attempt_timeout(30.0, 110.0, now=100.0) == 10.0
    assert attempt_timeout(5.0, 110.0, now=100.0) == 5.0
    assert attempt_timeout(30.0, 90.0, now=100.0) == 0.001  # past the deadline


def test_python_task_parameters_are_tagged_by_their_declared_type():
    definition = ActionDefinition(
        name="a", entrypoint="m:f", parameters=[ParameterSpec(name="x", type="int")]
    )
    assert task_parameters(definition, {"x": 5, "y": [1]}) == {
        "x": {"int": "5"},
        "y": {"json": "[1]"},
    }
    openjd = ActionDefinition(name="a", kind=ActionKind.OPENJD, command=["true"])
    assert task_parameters(openjd, {"x": {"int": "5"}}) == {"x": {"int": "5"}}
