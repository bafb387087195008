"""Invariants of the job rules: retries, step release, quarantine and claims."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.assignment import Candidate, attempt_timeout, choose, fits
from oprun.domain.models import RetryPolicy
from oprun.domain.quarantine import is_quarantined
from oprun.domain.retry import AfterInterruption, after_interruption, retry_after_failure
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.steps import StepTally, release_steps

codes = st.sampled_from(["CRASHED", "FAILED", "BOOM", "TIMEOUT"])
policies = st.builds(
    RetryPolicy,
    retry_on=st.lists(st.sampled_from(["CRASHED", "FAILED", "BOOM", "*"]), max_size=3),
    backoff_seconds=st.floats(0, 3600),
    backoff_max_seconds=st.floats(0, 86_400),
)
jitters = st.floats(0, 1, exclude_max=True)


@given(policies, st.integers(1, 100), st.integers(1, 100), st.none() | codes, jitters)
def test_a_retry_comes_only_with_attempts_left_and_waits_at_most_the_cap(
    policy, attempts, max_attempts, code, jitter
):
    retry = retry_after_failure(policy, attempts, max_attempts, code, jitter)
    if attempts >= max_attempts or not policy.retries(code):
        assert retry is None
        return
    assert retry is not None
    assert 0 <= retry.delay <= policy.backoff_max_seconds
    assert f"attempt {attempts + 1} in" in retry.message


@given(policies, st.integers(1, 20), jitters, jitters)
def test_more_jitter_never_shortens_the_backoff(policy, attempts, a, b):
    low, high = sorted((a, b))
    retry_low = retry_after_failure(policy, attempts, 100, "BOOM", low)
    retry_high = retry_after_failure(policy, attempts, 100, "BOOM", high)
    if retry_low is not None and retry_high is not None:
        assert retry_low.delay <= retry_high.delay


@given(st.sampled_from(list(OS)), st.integers(1, 100), st.integers(1, 100), st.booleans())
def test_an_interrupted_task_is_never_given_up_while_attempts_remain(
    status, attempts, max_attempts, given_back
):
    outcome = after_interruption(status, attempts, max_attempts, given_back=given_back)
    assert (outcome is AfterInterruption.CANCELED) == (status is OS.CANCELING)
    if attempts < max_attempts or given_back:
        assert outcome is not AfterInterruption.GAVE_UP
    if outcome is AfterInterruption.GIVEN_BACK:
        assert given_back


step_names = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def plans(draw):
    """Step dependencies without cycles (each step waits only for earlier ones)."""
    names = draw(st.lists(step_names, min_size=1, max_size=5, unique=True))
    return {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }


@given(plans(), st.data())
def test_released_steps_have_every_dependency_done_and_blocked_ones_never_start(plan, data):
    tallies = [
        StepTally(step, status, count, waiting=data.draw(st.integers(0, count)))
        for step in plan
        for status, count in data.draw(
            st.dictionaries(st.sampled_from(list(OS)), st.integers(1, 3), max_size=3)
        ).items()
    ]
    release = release_steps(plan, tallies)
    assert not set(release.ready) & set(release.never)
    done = {
        step for step in plan if all(t.status is OS.SUCCEEDED for t in tallies if t.step == step)
    }
    waiting = {t.step for t in tallies if t.status is OS.QUEUED and t.waiting}
    for step in release.ready:
        assert step in waiting
        assert all(dep in done for dep in plan[step])
    for step in release.never:
        assert step in waiting


@given(st.lists(st.sampled_from(list(SAS)), max_size=8), st.integers(0, 8))
def test_quarantine_needs_exactly_the_last_n_attempts_failed(last_ended, after):
    expected = after > 0 and len(last_ended) >= after and set(last_ended[:after]) == {SAS.FAILED}
    assert is_quarantined(last_ended, after) == expected


@given(st.none() | st.floats(0.001, 1e6), st.none() | st.floats(0, 1e6), st.floats(0, 1e6))
def test_an_attempts_timeout_never_outlasts_its_action_or_the_deadline(timeout, deadline, now):
    result = attempt_timeout(timeout, deadline, now)
    if timeout is None and deadline is None:
        assert result is None
        return
    assert result is not None and result > 0
    if timeout is not None:
        assert result <= timeout
    if deadline is not None:
        assert result <= max(deadline - now, 0.001)


capabilities = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.integers(0, 4),
        "cpus": st.integers(0, 64),
        "tags": st.lists(st.sampled_from(["cuda", "linux", "big"]), unique=True),
        "kinds": st.lists(st.sampled_from(["python", "openjd"]), unique=True),
    },
)
requirements = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.integers(0, 4),
        "cpus": st.integers(0, 64),
        "tags": st.lists(st.sampled_from(["cuda", "linux", "big"]), unique=True),
        "kind": st.sampled_from(["python", "openjd"]),
    },
)


@given(
    st.lists(st.tuples(st.sampled_from(["q", "r", "s"]), requirements), max_size=12),
    capabilities,
    st.dictionaries(st.sampled_from(["q", "r"]), st.integers(0, 3)),
    st.integers(0, 8),
)
def test_a_claim_takes_what_fits_in_order_within_room_and_want(tasks, caps, room, want):
    candidates = [Candidate(f"t{i}", queue, req) for i, (queue, req) in enumerate(tasks)]
    taken, left = choose(candidates, caps, room, want)
    assert len(taken) <= want
    ids = [c.task_id for c in candidates]
    assert taken == sorted(taken, key=ids.index)  # in the candidates' order
    by_id = {c.task_id: c for c in candidates}
    for task_id in taken:
        assert fits(by_id[task_id].requirements, caps)
    for queue, places in room.items():
        used = sum(1 for task_id in taken if by_id[task_id].queue_id == queue)
        assert used <= max(places, 0) and left[queue] == places - used
    if len(taken) < want:
        # Nothing that fits was passed over while its queue had room.
        for c in candidates:
            if c.task_id not in taken and fits(c.requirements, caps):
                assert c.queue_id in room and left[c.queue_id] <= 0
