"""What the HTTP server answers before the app runs: a request head it cannot read."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from oprun.domain.limits import MAX_HEADER_BYTES
from oprun.server import uvicorn_server
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store

ADMIN = "oprun_server_edge_unit_admin"


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, ADMIN)
    services = Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = uvicorn_server(services, "127.0.0.1", free)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        yield free
    finally:
        server.should_exit = True
        thread.join(10)
        services.close()


def _answer(port: int, request: bytes) -> bytes:
    """Everything the server sends back on one connection, until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = _answer(port, request).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/healthz?" + b"a" * (4 * MAX_HEADER_BYTES) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"a" * (4 * MAX_HEADER_BYTES)
        + b"\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        # Both framings at once, the request-smuggling shape: refused, not guessed at.
        b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    ],
    ids=["long-url", "long-header", "malformed", "length-and-chunked", "folded-header"],
)
def test_a_head_the_server_cannot_read_is_400_in_the_error_shape(port, request_bytes):
    status, headers, body = _exchange(port, request_bytes)
    assert status.startswith("HTTP/1.1 400")
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "VALIDATION"
    assert error["details"] == {"field": "head", "limit": MAX_HEADER_BYTES}


def test_a_readable_request_still_reaches_the_app(port):
    status, _, body = _exchange(
        port, b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status.startswith("HTTP/1.1 200")
    assert json.loads(body)["status"] == "ok"


def test_heads_are_limited_one_request_at_a_time_on_a_kept_alive_connection(port):
    """Forty heads of 2 KB on one connection, 80 KB in all: each is within the limit."""
    pad = b"X-Pad: " + b"a" * 2048 + b"\r\n"
    request = b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n"
    last = request.replace(b"Host: x", b"Host: x\r\nConnection: close")
    answer = _answer(port, request * 39 + last)
    assert 40 * len(request) > MAX_HEADER_BYTES
    assert answer.count(b"HTTP/1.1 200 OK") == 40, answer[-300:]


def test_a_body_that_arrives_with_its_head_is_not_counted_as_head(port):
    """A 300 KB body sent in the same writes as its head reaches the app (401 here)."""
    body = b'{"action": "noop", "parameters": {"x": "' + b"a" * 300_000 + b'"}}'
    status, _, answer = _exchange(
        port,
        b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
    )
    assert status.startswith("HTTP/1.1 401"), (status, answer[:300])


def test_an_upgrade_with_bytes_after_its_head_leaves_them_to_the_new_protocol(port, caplog):
    """A WebSocket upgrade (no route takes one: 403) followed at once by more bytes.

    Fed to the HTTP parser after the hand-over, those bytes drew a 400 onto a connection
    the WebSocket protocol owned, and its own answer then failed with a traceback.
    """
    head = (
        b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with caplog.at_level("ERROR"):
        status, _, _ = _exchange(port, head + b"GARBAGE" * 500)
        threading.Event().wait(0.2)  # the server logs after it answered
    assert status.startswith("HTTP/1.1 403"), status
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
