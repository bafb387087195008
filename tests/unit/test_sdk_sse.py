"""The SSE decoder follows the HTML standard's rules, one rule per test."""

from __future__ import annotations

from oprun.sdk._sse import ServerSentEvent, SSEDecoder


def decode(*chunks: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_data_lines_are_joined_with_lf_and_dispatched_on_a_blank_line():
    assert decode("data: a\ndata: b\n\n") == [ServerSentEvent(data="a\nb")]


def test_one_space_after_the_colon_is_dropped_and_no_more():
    assert decode("data:x\n\ndata:  y\n\n") == [
        ServerSentEvent(data="x"),
        ServerSentEvent(data=" y"),
    ]


def test_a_field_without_colon_has_an_empty_value():
    assert decode("data\n\n") == [ServerSentEvent(data="")]


def test_comments_and_unknown_fields_are_ignored():
    assert decode(": keepalive\nfoo: bar\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_an_event_without_data_is_not_dispatched_but_its_id_is_kept():
    decoder = SSEDecoder()
    assert decoder.feed("id: 41\nevent: noise\n\n") == []
    assert decoder.last_event_id == "41"
    assert decoder.feed("data: x\n\n") == [ServerSentEvent(data="x", id="41")]


def test_event_type_resets_after_each_dispatch():
    assert decode("event: a\ndata: 1\n\ndata: 2\n\n") == [
        ServerSentEvent(event="a", data="1"),
        ServerSentEvent(event="message", data="2"),
    ]


def test_an_id_with_nul_is_ignored_and_an_empty_id_resets():
    decoder = SSEDecoder()
    decoder.feed("id: 7\ndata: a\n\n")
    assert decoder.feed("id: 8\0\ndata: b\n\n")[0].id == "7"
    assert decoder.feed("id\ndata: c\n\n")[0].id == ""


def test_retry_must_be_digits():
    decoder = SSEDecoder()
    decoder.feed("retry: 1500\n\nretry: soon\n\nretry: -1\n\n")
    assert decoder.retry == 1500


def test_a_leading_bom_is_skipped_once():
    assert decode("\ufeffdata: a\n\n") == [ServerSentEvent(data="a")]
    assert decode("\ufeff", "\ufeffdata: a\n\n") == []  # a second BOM starts a field name


def test_an_unfinished_event_is_not_dispatched():
    assert decode("data: a\n\ndata: half") == [ServerSentEvent(data="a")]


def test_unicode_line_separators_inside_data_are_not_line_ends():
    assert decode("data: a\u2028b\x1cc\x85d\n\n") == [ServerSentEvent(data="a\u2028b\x1cc\x85d")]


def test_cr_at_a_chunk_end_followed_by_lf_is_one_line_end():
    assert decode("data: a\r", "\n\r", "\n") == [ServerSentEvent(data="a")]
    assert decode("data: a\r", "", "\r") == [ServerSentEvent(data="a")]
