"""`batch.padded`: an expanding IN's list, padded so few statement texts cover every length."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from oprun.store.batch import padded


@given(st.sets(st.text(min_size=1, max_size=8), max_size=600))
def test_a_padded_list_holds_the_same_values_in_a_power_of_two_length(values: set[str]) -> None:
    out = padded(values)
    assert set(out) == values
    assert out == sorted(out)
    if values:
        assert len(out) & (len(out) - 1) == 0  # a power of two
        assert len(values) <= len(out) < 2 * len(values)
    else:
        assert out == []


def test_lengths_up_to_512_take_ten_texts() -> None:
    lengths = {len(padded(f"id_{i}" for i in range(n))) for n in range(1, 513)}
    assert lengths == {1 << k for k in range(10)}
