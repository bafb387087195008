"""The SSE decoder reads back any stream of events, however the stream is cut into chunks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oprun.sdk._sse import ServerSentEvent, SSEDecoder, encode

# Field values cannot hold line breaks (CR, LF); data can (it is split into data lines).
_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"),
    max_size=30,
)
_data = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60)
_event = st.builds(
    ServerSentEvent,
    event=st.one_of(st.just("message"), _text.filter(lambda t: t != "" and t.strip() == t)),
    data=_data,
    id=st.one_of(st.just(""), st.from_regex(r"[0-9]{1,6}", fullmatch=True)),
    retry=st.one_of(st.none(), st.integers(0, 10**6)),
)


def _wire(events: list[ServerSentEvent], newline: str) -> str:
    return "".join(encode(e) for e in events).replace("\n", newline)


def _cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(text[start:point])
        start = point
    pieces.append(text[start:])
    return pieces


def _expected(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """What a decoder dispatches: data with CR/CRLF read as LF; id and retry carried over."""
    out, last_id, retry = [], "", None
    for e in events:
        last_id = e.id or last_id
        retry = e.retry if e.retry is not None else retry
        data = e.data.replace("\r\n", "\n").replace("\r", "\n")
        out.append(ServerSentEvent(event=e.event, data=data, id=last_id, retry=retry))
    return out


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=8),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    comments=st.booleans(),
)
def test_decoding_any_chunking_gives_back_the_events(events, newline, cuts, comments):
    wire = _wire(events, newline)
    if comments:
        wire = f":keepalive{newline}{newline}" + wire + f": bye{newline}"
    decoder = SSEDecoder()
    decoded = [event for piece in _cut(wire, cuts) for event in decoder.feed(piece)]
    assert decoded == _expected(events)


@given(data=_data, cuts=st.lists(st.integers(0, 200), max_size=6))
def test_a_crlf_cut_between_its_cr_and_lf_is_one_line_end(data, cuts):
    wire = encode(ServerSentEvent(data=data)).replace("\n", "\r\n")
    decoder = SSEDecoder()
    decoded = [event for piece in _cut(wire, cuts) for event in decoder.feed(piece)]
    assert [e.data for e in decoded] == [data.replace("\r\n", "\n").replace("\r", "\n")]
