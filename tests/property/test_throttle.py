"""The failed-authentication rule: never more than `limit` answered within a window, never stuck."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.throttle import FailureRule, retry_after_header

EPSILON = 1e-6


@st.composite
def rules(draw: st.DrawFn) -> FailureRule:
    return FailureRule(limit=draw(st.integers(1, 30)), window=draw(st.floats(0.01, 3600)))


gaps = st.lists(st.floats(0, 100), max_size=200)


@given(rules(), st.floats(0, 1e6), gaps)
def test_at_most_limit_failures_are_answered_within_any_window(rule, start, steps):
    """A client retrying at these gaps: those answered 401 never exceed the limit per window."""
    now, failures, answered = start, (), []
    for gap in steps:
        now += gap
        if rule.retry_after(failures, now) is None:
            answered.append(now)
        failures = rule.record(failures, now)
    for i, first in enumerate(answered):
        within = [t for t in answered[i:] if t - first < rule.window - EPSILON]
        assert len(within) <= rule.limit


@given(rules(), st.floats(0, 1e6), gaps)
def test_the_wait_is_within_the_window_and_waiting_it_lets_the_client_in(rule, start, steps):
    now, failures = start, ()
    for gap in steps:
        now += gap
        failures = rule.record(failures, now)
        wait = rule.retry_after(failures, now)
        if wait is None:
            continue
        assert 0 < wait <= rule.window
        assert rule.retry_after(failures, now + wait + EPSILON) is None
        assert retry_after_header(wait) >= wait


@given(rules(), st.lists(st.floats(0, 1e6), max_size=300))
def test_memory_per_client_never_exceeds_the_limit(rule, times):
    failures: tuple[float, ...] = ()
    for t in sorted(times):
        failures = rule.record(failures, t)
        assert len(failures) <= rule.limit


def test_the_limit_th_failure_within_the_window_throttles_until_the_first_leaves():
    rule = FailureRule(limit=3, window=60)
    failures = rule.record(rule.record(rule.record((), 0), 10), 20)
    assert rule.retry_after(failures[:2], 20) is None
    assert rule.retry_after(failures, 20) == 40
    assert rule.retry_after(failures, 59.5) == 0.5
    assert rule.retry_after(failures, 60) is None
    assert retry_after_header(0.01) == 1 and retry_after_header(1.5) == 2
