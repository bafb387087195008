"""The worker's HTTP/1.1 transport (`oprun.worker._http.LeanTransport`) against a raw server.

The server here is a few lines over asyncio streams, so each test can answer exactly
as a misbehaving or restarting server would: chunked, closing the connection, never
answering, breaking off half way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from oprun.sdk._failover import not_sent
from oprun.worker._http import LeanTransport

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (its body given); False closes the connection afterwards."""


def ok(body: object, *, extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: "
        + str(len(data)).encode()
        + b"\r\n\r\n"
        + data
    )


class RawServer:
    """Counts connections and requests; `answer` writes each answer."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[bytes, bytes] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.requests.append((line, headers, body))
                if not await self.answer(body, writer):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(handler)


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), **kwargs)  # type: ignore[arg-type]


async def echo(body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(ok({"got": json.loads(body or b"null")}))
    return True


def test_requests_share_one_kept_alive_connection_and_carry_headers_and_body():
    async def main() -> None:
        async with RawServer(echo) as server, client(headers={"Authorization": "Bearer t"}) as c:
            for i in range(3):
                response = await c.post(server.url + "/v1/x:claim?wait=1", content=json.dumps(i))
                assert response.status_code == 200
                assert response.json() == {"got": i}
            assert server.connections == 1
            line, headers, body = server.requests[0]
            assert line == b"POST /v1/x:claim?wait=1 HTTP/1.1\r\n"
            assert headers[b"authorization"] == b"Bearer t"
            assert headers[b"host"] == server.url.removeprefix("http://").encode()
            assert body == b"0"

    asyncio.run(main())


def test_a_chunked_answer_and_an_error_answer_are_read_whole():
    async def answer(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n'
            )
        else:
            error = b'{"error":{"code":"CONFLICT","message":"no"}}'
            writer.write(
                b"HTTP/1.1 409 Conflict\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error)
            )
        return True

    async def main() -> None:
        async with RawServer(answer) as server, client() as c:
            response = await c.post(server.url + "/a", content=b"chunked")
            assert response.json() == {"a": 1}
            response = await c.post(server.url + "/a", content=b"other")
            assert response.status_code == 409
            assert response.reason_phrase == "Conflict"
            assert response.json()["error"]["code"] == "CONFLICT"
            response = await c.post(server.url + "/a", content=b"chunked")
            assert response.json() == {"a": 1}
            assert server.connections == 1

    asyncio.run(main())


def test_a_connection_the_server_closed_or_asked_to_close_is_not_reused():
    async def answer(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"close-header":
            writer.write(ok({}, extra=b"connection: close\r\n"))
            return True  # the transport must not send another request on it
        writer.write(ok({}))
        return body != b"hang-up"  # the server closes its side after this answer

    async def main() -> None:
        async with RawServer(answer) as server, client() as c:
            await c.post(server.url + "/a", content=b"hang-up")
            await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
            assert (await c.post(server.url + "/a", content=b"close-header")).status_code == 200
            assert (await c.post(server.url + "/a", content=b"x")).status_code == 200
            assert server.connections == 3
            assert (await c.post(server.url + "/a", content=b"x")).status_code == 200
            assert server.connections == 3

    asyncio.run(main())


def test_a_refused_connection_is_a_connect_error_that_never_reached_a_server():
    async def main() -> None:
        async with RawServer(echo) as server:
            url = server.url
        await asyncio.sleep(0.05)
        async with client() as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.post(url + "/a", content=b"1")
            assert not_sent(caught.value)

    asyncio.run(main())


def test_no_answer_in_time_is_a_read_timeout_and_the_connection_is_dropped():
    async def answer(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"slow":
            await asyncio.sleep(1.0)
        writer.write(ok({"body": body.decode()}))
        return True

    async def main() -> None:
        async with RawServer(answer) as server, client() as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(server.url + "/a", content=b"slow", timeout=0.2)
            response = await c.post(server.url + "/a", content=b"fast")
            assert response.json() == {"body": "fast"}  # never the late answer to "slow"
            assert server.connections == 2

    asyncio.run(main())


def test_an_answer_broken_off_is_a_protocol_error_and_a_cancel_drops_the_connection():
    async def answer(body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"broken":
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')
            return False
        if body == b"never":
            await asyncio.sleep(10)
        writer.write(ok({"body": body.decode()}))
        return True

    async def main() -> None:
        async with RawServer(answer) as server, client() as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.post(server.url + "/a", content=b"broken")
            pending = asyncio.create_task(c.post(server.url + "/a", content=b"never"))
            await asyncio.sleep(0.1)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            response = await c.post(server.url + "/a", content=b"after")
            assert response.json() == {"body": "after"}
            assert server.connections == 3

    asyncio.run(main())


def test_https_goes_through_the_fallback_transport():
    seen: list[str] = []

    class Fallback(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(200, json={"via": "fallback"})

    async def main() -> None:
        async with httpx.AsyncClient(transport=LeanTransport(Fallback())) as c:
            response = await c.post("https://api.example/v1/x", content=b"{}")
            assert response.json() == {"via": "fallback"}
        assert seen == ["https://api.example/v1/x"]

    asyncio.run(main())
