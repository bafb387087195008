"""The JSON text batch statements send (`oprun.store.batch.encode_json`) reads back as given."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oprun.store.batch import encode_json, joined

# What the store sends: text without lone surrogates (refused at the edge), integers
# within 64 bits, finite floats, and lists and objects of these.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(_VALUES)
def test_a_document_reads_back_as_the_value_it_encodes(value: Any) -> None:
    assert json.loads(encode_json(value)) == value


def test_a_key_that_is_not_text_is_written_as_text_as_json_writes_it() -> None:
    assert json.loads(encode_json({1: "a", 2.5: None})) == json.loads(
        json.dumps({1: "a", 2.5: None})
    )


def test_a_timestamp_keeps_every_digit_and_text_is_not_escaped() -> None:
    row = {"at": 1_780_000_000.123456789, "note": 'é "€" \\ \n \x00'}
    assert json.loads(encode_json(row)) == row
    assert "é" in encode_json(row)  # UTF-8 as it is, as ensure_ascii=False wrote it


def test_joined_values_split_back_and_a_comma_is_refused() -> None:
    assert joined(["op_1", "op_2"]) == "op_1,op_2" and joined([]) == ""
    for bad in (["op_1", "a,b"], [""], ["op_1", ""]):
        with pytest.raises(ValueError, match="empty or holds a comma"):
            joined(bad)
