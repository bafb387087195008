"""`client.events`: resuming where the stream was, filtering, and when to give up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import httpx
import pytest

from oprun import AccessDenied, ServerError, Unavailable, ValidationError
from oprun.sdk import HttpRetry
from oprun.sdk.events import EventCursor

from ._sdk_stub import NOW, Stub, error

EVENTS = "/v1/events"


def event(seq: int, type_: str = "operation.status", entity: str = "op_1", **data) -> str:
    body = {
        "id": seq,
        "project_id": "prj_1",
        "type": type_,
        "entity_id": entity,
        "at": NOW,
        "data": data,
    }
    return f"id: {seq}\nevent: {type_}\ndata: {json.dumps(body)}\n\n"


def stream(*parts: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text="".join(parts))


def test_from_now_sends_no_position_then_resumes_after_the_last_event():
    stub = Stub().on("GET", EVENTS, stream(event(5), event(6)), stream(event(6), event(7)))
    with contextlib.closing(stub.client().events.stream()) as events:
        assert [e.id for e in itertools.islice(events, 3)] == [5, 6, 7]  # 6 is not repeated
    first, second = stub.sent("GET", EVENTS)[:2]
    assert "last-event-id" not in first.headers and "after" not in first.url.params
    assert second.headers["last-event-id"] == "6" and second.url.params["after"] == "6"
    assert first.headers["accept"] == "text/event-stream"
    assert stub.sleeps == [1.0]  # a stream the server ended: reconnect after its retry time


def test_iterating_the_resource_streams_from_now():
    stub = Stub().on("GET", EVENTS, stream(event(1)))
    events = iter(stub.client().events)
    assert next(events).id == 1
    events.close()


def test_an_id_without_data_moves_the_position():
    stub = Stub().on("GET", EVENTS, stream("id: 40\nretry: 250\n\n", event(41)), stream(event(42)))
    with contextlib.closing(stub.client().events.stream()) as events:
        assert [e.id for e in itertools.islice(events, 2)] == [41, 42]
    assert stub.sent("GET", EVENTS)[1].headers["last-event-id"] == "41"
    assert stub.sleeps == [0.25]


def test_types_and_entity_filter_but_the_position_still_moves():
    stub = Stub().on(
        "GET",
        EVENTS,
        stream(
            event(1, "operation.created", status="QUEUED"),
            event(2, entity="op_2", status="RUNNING"),
            event(3, status="SUCCEEDED"),
        ),
        stream(event(4, status="x")),
    )
    events = stub.client().events.stream(after=0, types="operation.status", entity_id="op_1")
    with contextlib.closing(events):
        assert [e.id for e in itertools.islice(events, 2)] == [3, 4]
    assert stub.sent("GET", EVENTS)[1].headers["last-event-id"] == "3"


def test_outages_are_retried_with_backoff_until_patience_runs_out():
    stub = Stub().on(
        "GET", EVENTS, httpx.ConnectError("refused"), error("UNAVAILABLE", 503), stream(event(1))
    )
    with contextlib.closing(stub.client().events.stream(after=0)) as events:
        assert next(events).id == 1
    assert len(stub.sleeps) == 2 and all(s <= HttpRetry().max_outage_backoff for s in stub.sleeps)

    stub = Stub().on("GET", EVENTS, httpx.ConnectError("refused"))
    with pytest.raises(Unavailable, match=r"cannot reach oprun at http://oprun\.test"):
        next(stub.client().events.stream(patience=0))


def test_refusals_and_non_streams_raise_at_once():
    stub = Stub().on("GET", EVENTS, error("ACCESS_DENIED", 403, "viewers only"))
    with pytest.raises(AccessDenied):
        next(stub.client().events.stream())
    stub = Stub().on("GET", EVENTS, httpx.Response(200, json={"not": "a stream"}))
    with pytest.raises(ServerError, match="text/event-stream"):
        next(stub.client().events.stream())
    stub = Stub().on("GET", EVENTS, stream("data: {not json}\n\n"))
    with pytest.raises(ServerError, match="unreadable event"):
        next(stub.client().events.stream())
    with pytest.raises(ValidationError):
        EventCursor("http://x", -1, types=None, entity_id=None, patience=None, policy=HttpRetry())


def test_the_async_stream_reads_and_resumes_the_same_way():
    stub = Stub().on(
        "GET", EVENTS, stream(event(1), event(2)), error("UNAVAILABLE", 503), stream(event(3))
    )

    async def scenario() -> list[int]:
        async with (
            stub.async_client() as client,
            contextlib.aclosing(client.events.stream(after=0)) as events,
        ):
            return [(await anext(events)).id for _ in range(3)]

    assert asyncio.run(scenario()) == [1, 2, 3]
    assert [r.headers.get("last-event-id") for r in stub.sent("GET", EVENTS)] == ["0", "2", "2"]
