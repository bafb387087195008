"""The one rule for what reaches storage (oprun.domain.text), on the models that use it."""

from __future__ import annotations

import json
import math

import pydantic
import pytest

from oprun.domain.models import ActionDefinition, Invocation, TokenCreate
from oprun.domain.protocol import ClaimRequest, Report, WorkerRegistration
from oprun.domain.text import escape, read_json, unstorable


def test_escape_makes_nul_and_lone_surrogates_visible_and_leaves_the_rest() -> None:
    assert escape("a\x00b") == "a\\x00b"
    assert escape("raw \udcff") == "raw \\xff"  # surrogateescape: the byte itself
    assert escape("lone \ud800") == "lone \\ud800"
    assert escape("😀 é \\x00") == "😀 é \\x00"
    assert not unstorable("😀") and unstorable("\x00") and unstorable("\udfff")


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (Invocation, {"action": "a", "parameters": {"p": "\ud800"}}, "parameters"),
        (Invocation, {"action": "a", "parameters": {"p": [{"\x00": 1}]}}, "parameters"),
        (Invocation, {"action": "a", "parameters": {"p": 2**63}}, "parameters"),
        (Invocation, {"action": "a", "parameters": {"p": math.nan}}, "parameters"),
        (Invocation, {"action": "a", "timeout": math.inf}, "timeout"),
        (Invocation, {"action": "a", "version": 2**31}, "version"),
        (Invocation, {"action": "a", "version": True}, "version"),
        (TokenCreate, {"name": "t\x00", "role": "viewer"}, "name"),
        (WorkerRegistration, {"name": "w", "hostname": "h", "queues": ["q\x00"]}, "queues"),
        (ClaimRequest, {"max": True}, "max"),
        (
            ActionDefinition,
            {"name": "a", "parameters": [{"name": "p", "type": "string", "default": "\x00"}]},
            "parameters",
        ),
        (
            Report,
            {"session_action_id": "s", "lease_epoch": 1, "kind": "log", "exit_code": 2**31},
            "exit_code",
        ),
    ],
)
def test_request_text_and_numbers_no_backend_stores_are_refused_naming_the_field(
    model: type[pydantic.BaseModel], data: dict, field: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(data)
    assert caught.value.errors()[0]["loc"][0] == field
    json.dumps(caught.value.errors()[0]["msg"]).encode()  # the message itself is encodable


def test_action_output_is_escaped_and_its_result_keeps_odd_numbers_as_text() -> None:
    report = Report.model_validate(
        {
            "session_action_id": "s",
            "lease_epoch": 1,
            "kind": "succeeded",
            "lines": ["a\x00", "\udc80"],
            "message": "m\ud800",
            "error_message": "e\x00",
            "result": {"k\x00": [math.nan, 2**70, "v\udcff"]},
        }
    )
    assert report.lines == ["a\\x00", "\\x80"]
    assert report.message == "m\\ud800" and report.error_message == "e\\x00"
    assert report.result == {"k\\x00": ["NaN", "1180591620717411303424", "v\\xff"]}
    report.model_dump_json()  # encodable


def test_stored_json_with_a_lone_surrogate_reads_back_escaped() -> None:
    assert read_json(json.dumps({"a": "\ud800", "b": "😀", "\udcff": 1})) == {
        "a": "\\ud800",
        "b": "😀",
        "\\xff": 1,
    }
    assert read_json('{"a": [1, "é"]}') == {"a": [1, "é"]}
