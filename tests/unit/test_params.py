"""Typed parameters: coercion, bounds, and errors that name the parameter."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.errors import ValidationError
from oprun.domain.params import ParameterSpec, specs_from_signature, tagged, validate_parameters

SPECS = [
    ParameterSpec(name="width", type="int", minimum=1, maximum=10_000),
    ParameterSpec(name="scale", type="float", required=False, default=1.0),
    ParameterSpec(
        name="mode", type="string", required=False, default="fit", allowed=["fit", "fill"]
    ),
    ParameterSpec(name="dry", type="bool", required=False, default=False),
]


def test_values_are_coerced_from_their_string_forms():
    got = validate_parameters(SPECS, {"width": "640", "scale": "0.5", "dry": "true"})
    assert got == {"width": 640, "scale": 0.5, "mode": "fit", "dry": True}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({}, "missing required parameter 'width'"),
        ({"width": "abc"}, "parameter 'width' must be an int"),
        ({"width": 0}, "parameter 'width' must be >= 1"),
        ({"width": 5, "mode": "crop"}, "parameter 'mode' must be one of"),
        ({"width": 5, "height": 3}, "unknown parameter 'height'"),
        ({"width": True}, "parameter 'width' must be an int"),
        ({"width": 5, "scale": "nan"}, "parameter 'scale' must be a float"),
    ],
)
def test_bad_values_raise_an_error_naming_the_parameter(values, problem):
    with pytest.raises(ValidationError) as caught:
        validate_parameters(SPECS, values)
    assert problem in caught.value.message
    assert caught.value.details["parameter"] in caught.value.message


@given(st.integers(min_value=1, max_value=10_000))
def test_any_int_in_range_round_trips_through_its_string(width):
    assert validate_parameters(SPECS, {"width": str(width)})["width"] == width


@given(st.text())
def test_arbitrary_text_for_an_int_is_accepted_or_named(text):
    try:
        value = validate_parameters(SPECS, {"width": text})["width"]
    except ValidationError as exc:
        assert exc.details["parameter"] == "width"
    else:
        assert isinstance(value, int) and 1 <= value <= 10_000


def test_specs_are_inferred_from_a_signature():
    def resize(
        ctx: Any, width: int, path: pathlib.Path, scale: float = 1.0, meta: dict | None = None
    ):
        return None

    specs = {s.name: s for s in specs_from_signature(resize)}
    assert [*specs] == ["width", "path", "scale", "meta"]
    assert specs["width"].type == "int" and specs["width"].required
    assert specs["path"].type == "path"
    assert specs["scale"].type == "float" and specs["scale"].default == 1.0
    assert specs["meta"].type == "json" and not specs["meta"].required


def test_values_are_tagged_as_deadline_does():
    assert tagged(5, "int") == {"int": "5"}
    assert tagged(0.5, "float") == {"float": "0.5"}
    assert tagged("/x", "path") == {"path": "/x"}
    assert tagged({"a": 1}, "json") == {"json": '{"a": 1}'}
