"""The SDK's retry rules over real sockets, against a small loopback server that fails on cue.

The oprun server never answers 429, 500 or 503 on demand, so `Flaky` (an
`http.server` in a thread) answers the first calls of a route with the error a
test scripts, then with a valid answer, and records every request it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oprun import AsyncClient, AuthenticationError, Client, ServerError, Throttled, Unavailable
from oprun.testing import free_port
from tests.unit._sdk_stub import NOW, op_json


@dataclass(frozen=True)
class Answer:
    """One scripted answer: status, headers and body (a str body is sent as is)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, **headers: str) -> Answer:
    return Answer(
        status, {"error": {"code": code, "message": f"{code} on cue", "details": {}}}, headers
    )


def event(seq: int, status: str = "RUNNING") -> str:
    body = {
        "id": seq,
        "project_id": "prj_1",
        "type": "operation.status",
        "entity_id": "op_1",
        "at": NOW,
        "data": {"status": status},
    }
    return f"id: {seq}\nevent: operation.status\ndata: {json.dumps(body)}\n\n"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Flaky:
    """A loopback HTTP server answering each route from a script (the last answer repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], deque[Answer]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with flaky.lock:
                    flaky.seen.append(
                        Seen(self.command, path, dict(self.headers), body, time.monotonic())
                    )
                    queue = flaky.routes.get((self.command, path))
                    answer = (
                        (queue.popleft() if len(queue) > 1 else queue[0])
                        if queue
                        else error(404, "NOT_FOUND")
                    )
                if isinstance(answer.body, str):  # an event stream: send, then hang up
                    data = answer.body.encode()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                data = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def on(self, method: str, path: str, *answers: Answer) -> Flaky:
        """Script the next answers of a route (replacing what is left of its script)."""
        with self.lock:
            self.routes[(method, path)] = deque(answers)
        return self

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    server = Flaky()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


OP = "/v1/operations/op_1"
OK = Answer(200, op_json())


# -- 429 with Retry-After --------------------------------------------------------------
def test_429_waits_the_servers_retry_after_then_succeeds_sync(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(429, "THROTTLED", **{"Retry-After": "1"}), OK)
    with Client(flaky.url, "t") as client:
        assert client.operations.get("op_1").id == "op_1"
    first, second = flaky.calls("GET", OP)
    assert second.at - first.at >= 1.0


def test_429_waits_the_servers_retry_after_then_succeeds_async(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(429, "THROTTLED", **{"Retry-After": "1"}), OK)

    async def scenario() -> str:
        async with AsyncClient(flaky.url, "t") as client:
            return (await client.operations.get("op_1")).id

    assert asyncio.run(scenario()) == "op_1"
    first, second = flaky.calls("GET", OP)
    assert second.at - first.at >= 1.0


def test_429_past_the_retries_raises_throttled_with_retry_after(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(429, "THROTTLED", **{"Retry-After": "0"}))
    with Client(flaky.url, "t", retries=2) as client, pytest.raises(Throttled) as caught:
        client.operations.get("op_1")
    assert caught.value.details["retry_after"] == 0
    assert len(flaky.calls("GET", OP)) == 3


# -- 503 and connection failures --------------------------------------------------------
def test_503_is_retried_with_backoff_sync_and_async(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(503, "UNAVAILABLE"), error(503, "UNAVAILABLE"), OK)
    with Client(flaky.url, "t") as client:
        assert client.operations.get("op_1").id == "op_1"
    assert len(flaky.calls("GET", OP)) == 3

    flaky.on("GET", "/v1/operations/op_2", error(503, "UNAVAILABLE"), Answer(200, op_json("op_2")))

    async def scenario() -> str:
        async with AsyncClient(flaky.url, "t") as client:
            return (await client.operations.get("op_2")).id

    assert asyncio.run(scenario()) == "op_2"
    assert len(flaky.calls("GET", "/v1/operations/op_2")) == 2


def test_503_past_the_retries_raises_unavailable(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(503, "UNAVAILABLE"))
    with Client(flaky.url, "t", retries=1) as client, pytest.raises(Unavailable):
        client.operations.get("op_1")
    assert len(flaky.calls("GET", OP)) == 2


def test_500_is_not_retried(flaky: Flaky) -> None:
    flaky.on("GET", OP, error(500, "INTERNAL"), OK)
    with Client(flaky.url, "t") as client, pytest.raises(ServerError, match="INTERNAL on cue"):
        client.operations.get("op_1")
    assert len(flaky.calls("GET", OP)) == 1


def test_a_closed_port_is_unavailable_naming_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "t", retries=1) as client, pytest.raises(Unavailable, match=url):
        client.operations.get("op_1")


# -- which calls are retried --------------------------------------------------------------
def test_post_without_idempotency_key_is_not_retried_sync_and_async(flaky: Flaky) -> None:
    flaky.on("POST", f"{OP}:cancel", error(503, "UNAVAILABLE"), OK)
    flaky.on("POST", f"{OP}:retry", error(503, "UNAVAILABLE"), OK)
    with Client(flaky.url, "t") as client:
        with pytest.raises(Unavailable):
            client.operations.cancel("op_1")
        with pytest.raises(Unavailable):
            client.operations.retry("op_1")

    async def scenario() -> None:
        async with AsyncClient(flaky.url, "t") as client:
            with pytest.raises(Unavailable):
                await client.operations.cancel("op_1")

    flaky.on("POST", f"{OP}:cancel", error(503, "UNAVAILABLE"))
    asyncio.run(scenario())
    assert len(flaky.calls("POST", f"{OP}:cancel")) == 2  # one per client: never retried
    assert len(flaky.calls("POST", f"{OP}:retry")) == 1


def test_invoke_is_retried_with_one_idempotency_key(flaky: Flaky) -> None:
    flaky.on("POST", "/v1/operations", error(503, "UNAVAILABLE"), Answer(201, op_json()))
    with Client(flaky.url, "t") as client:
        assert client.operations.invoke("resize", {"width": 1}).id == "op_1"
    keys = {json.loads(s.body)["idempotency_key"] for s in flaky.calls("POST", "/v1/operations")}
    assert len(flaky.calls("POST", "/v1/operations")) == 2 and len(keys) == 1


def test_wait_keeps_retrying_503_past_the_retry_count_until_its_timeout(flaky: Flaky) -> None:
    wait = f"{OP}:wait"
    flaky.on(
        "GET", wait, *[error(503, "UNAVAILABLE")] * 4, Answer(200, op_json(status="SUCCEEDED"))
    )
    with Client(flaky.url, "t", retries=1) as client:
        assert client.operations.wait("op_1", timeout=30).state == "SUCCEEDED"
    assert len(flaky.calls("GET", wait)) == 5

    flaky.on("GET", "/v1/operations/op_3:wait", error(503, "UNAVAILABLE"))
    with Client(flaky.url, "t", retries=1) as client, pytest.raises(Unavailable):
        client.operations.wait("op_3", timeout=1)


# -- event streams reconnect with Last-Event-ID ---------------------------------------------
def test_event_stream_reconnects_with_last_event_id_sync_and_async(flaky: Flaky) -> None:
    stream = "/v1/events"
    flaky.on(
        "GET",
        stream,
        Answer(200, "retry: 50\n\n" + event(1) + event(2)),  # then the server hangs up
        error(503, "UNAVAILABLE"),
        Answer(200, event(2) + event(3, "SUCCEEDED")),  # a replay overlapping what was seen
    )
    with Client(flaky.url, "t") as client, contextlib.closing(client.events.stream()) as events:
        got = [next(events).id for _ in range(3)]
    assert got == [1, 2, 3]
    first, second, third = flaky.calls("GET", stream)
    assert "last-event-id" not in {k.lower() for k in first.headers}
    assert second.headers["Last-Event-ID"] == "2" and third.headers["Last-Event-ID"] == "2"

    flaky.on("GET", "/v1/events", Answer(200, event(4)), Answer(200, event(5)))

    async def scenario() -> list[int]:
        async with (
            AsyncClient(flaky.url, "t") as client,
            contextlib.aclosing(client.events.stream(after=3)) as events,
        ):
            return [(await anext(events)).id for _ in range(2)]

    before = len(flaky.calls("GET", stream))
    assert asyncio.run(scenario()) == [4, 5]
    assert flaky.calls("GET", stream)[before].headers["Last-Event-ID"] == "3"
    assert flaky.calls("GET", stream)[before + 1].headers["Last-Event-ID"] == "4"


def test_event_stream_gives_up_after_its_patience(flaky: Flaky) -> None:
    flaky.on("GET", "/v1/events", error(503, "UNAVAILABLE"))
    started = time.monotonic()
    with Client(flaky.url, "t") as client, pytest.raises(Unavailable):
        next(client.events.stream(patience=0.5))
    assert 0.5 <= time.monotonic() - started < 5
    assert len(flaky.calls("GET", "/v1/events")) >= 2


def test_event_stream_refused_is_raised_at_once(flaky: Flaky) -> None:
    flaky.on("GET", "/v1/events", error(401, "UNAUTHENTICATED"))
    with Client(flaky.url, "t") as client, pytest.raises(AuthenticationError):
        next(client.events.stream())
    assert len(flaky.calls("GET", "/v1/events")) == 1
