"""The one backoff formula shared by the SDK, the worker client and task retries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.backoff import backoff


def test_the_step_doubles_from_first_up_to_the_cap():
    assert [backoff(n, 0.25, 8.0, 1.0) for n in range(7)] == [0.25, 0.5, 1, 2, 4, 8, 8]


def test_equal_jitter_keeps_between_half_the_step_and_all_of_it():
    assert backoff(2, 1.0, 100.0, 0.0) == 2.0
    assert backoff(2, 1.0, 100.0, 0.5) == 3.0
    assert backoff(2, 1.0, 100.0, 1.0) == 4.0


def test_a_huge_exponent_is_the_cap_not_an_overflow():
    assert backoff(10_000, 0.25, 8.0, 1.0) == 8.0
    assert backoff(-3, 0.25, 8.0, 1.0) == 0.25
    assert backoff(10_000, 0.0, 8.0, 1.0) == 0.0


@given(
    st.integers(-5, 5000),
    st.floats(0, 3600),
    st.floats(0, 86_400),
    st.floats(0, 1),
)
def test_a_delay_is_never_over_the_cap_nor_under_half_the_step(exponent, first, cap, jitter):
    delay = backoff(exponent, first, cap, jitter)
    step = min(cap, first * 2.0 ** min(max(exponent, 0), 1023))
    assert step / 2 <= delay <= step <= cap
