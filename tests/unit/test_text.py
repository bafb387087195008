"""The one rule for what reaches storage (oprun.domain.text), on the models that use it."""

from __future__ import annotations

import json
import math

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oprun.domain.escaping import UNSTORABLE
from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.domain.models import ActionDefinition, Invocation, TokenCreate
from oprun.domain.protocol import (
    ClaimRequest,
    Report,
    ReportBatch,
    SessionReport,
    WorkerRegistration,
)
from oprun.domain.text import (
    Unstorable,
    _plainly_storable,
    escape,
    fit,
    read_json,
    refuse,
    storable,
    unstorable,
)
from oprun.worker._subprocess import LineSplitter, decode_line


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


def test_fit_escapes_then_cuts_never_inside_a_character_or_an_escape() -> None:
    assert fit("abc") == "abc" and fit("a\x00", chars=10) == "a\\x00"
    assert fit("ab\x00cd", chars=6) == "ab\\x00"
    assert fit("ab\x00cd", chars=5) == "ab"  # `\x00` does not fit whole: no `\x0`
    assert fit("ab\udcffcd", chars=7) == "ab\\xffc"
    assert fit("é" * 10, utf8_bytes=5) == "éé"  # 2 bytes each: never half of one
    assert fit("😀\x00", utf8_bytes=7) == "😀"
    assert fit("\ud800" * 4, chars=13) == "\\ud800\\ud800"
    for text in ("\x00" * 5000, "a\udc80" * 3000, "é\x00😀" * 2000):
        assert len(fit(text, chars=4096)) <= 4096
        assert len(fit(text, utf8_bytes=16_384).encode()) <= 16_384
        assert not unstorable(fit(text, chars=4096))


def test_action_output_is_cut_to_each_limit_once_escaped_never_refused() -> None:
    report = Report.model_validate(
        {
            "session_action_id": "s",
            "lease_epoch": 1,
            "kind": "failed",
            "lines": ["\x00" * MAX_LOG_LINE_BYTES, "ok"],
            "message": "m" + "\x00" * 4096,
            "step_code": "\x00" * 64,
            "error_message": "\udc80" * 16_384,
        }
    )
    assert report.lines[0] == "\\x00" * (MAX_LOG_LINE_BYTES // 4) and report.lines[1] == "ok"
    assert report.message == "m" + "\\x00" * 1023
    assert report.step_code == "\\x00" * 16
    assert report.error_message == "\\x80" * 4096
    session = SessionReport.model_validate(
        {
            "session_id": "s",
            "session_action_id": "sa_" + "0" * 32,
            "definition": {"envEnter": {}},
            "status": "RUNNING",
            "message": "\x00" * 4096,
            "lines": ["é\udcff" * MAX_LOG_LINE_BYTES],
        }
    )
    assert session.message is not None and len(session.message) == 4096
    assert session.lines[0] == "é\\xff" * (MAX_LOG_LINE_BYTES // 6) + "é"  # 6 bytes a pair


def test_a_childs_raw_bytes_come_back_as_their_escapes_whole_characters_as_themselves() -> None:
    """Output split into lines by bytes: undecodable bytes become `\\xNN`, even when a
    multi-byte character arrives in two reads it comes back whole."""
    splitter = LineSplitter(MAX_LOG_LINE_BYTES)
    lines = splitter.feed(b"raw \x80 and \xff, split \xe2\x82") + splitter.feed(b"\xac here\r\n")
    assert [decode_line(line) for line in lines] == ["raw \\x80 and \\xff, split \u20ac here"]
    # A line of bytes that are not UTF-8 is cut to the limit, not emptied.
    (cut,) = LineSplitter(10).feed(b"\x80" * 50 + b"\n")
    assert cut == b"\x80" * 10
    (cut,) = LineSplitter(10).feed(b"123456789\xe2\x82\xac\n")
    assert cut == b"123456789"


@given(st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udc80", "\udfff"])))
def test_refusal_follows_the_one_pattern_whatever_the_text(text: str) -> None:
    # ASCII text takes a shortcut past the pattern: it must refuse exactly the same.
    try:
        refuse(text)
    except Unstorable:
        refused = True
    else:
        refused = False
    assert refused == (UNSTORABLE.search(text) is not None)


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udc80"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)


@given(plain_values, st.booleans())
def test_a_value_passed_at_a_glance_is_one_the_full_walk_keeps_as_it_is(value, output) -> None:
    # Field values that hold to the rule at a glance skip the walk: exactly those it
    # would keep unchanged, refused or escaped alike.
    if not _plainly_storable(value):
        return
    assert storable(value, output=output, result=False) is value


def test_a_batch_of_reports_is_checked_report_by_report() -> None:
    # The batch's list of reports passes at a glance: each report checked its own fields.
    held = {"session_action_id": "sa_" + "0" * 32, "lease_epoch": 1}
    batch = ReportBatch.model_validate(
        {"reports": [{**held, "kind": "log", "lines": ["ok", "nul \x00 here"]}]}
    )
    assert batch.reports[0].lines == ["ok", "nul \\x00 here"]
    with pytest.raises(pydantic.ValidationError, match=r"reports\.0\.lease_epoch"):
        ReportBatch.model_validate({"reports": [{**held, "lease_epoch": 2**64, "kind": "log"}]})
