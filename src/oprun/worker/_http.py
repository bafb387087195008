"""`LeanTransport`: the worker's HTTP/1.1 over plain asyncio streams, for `http://` URLs.

The worker's calls are small JSON requests and answers, a claim and a report for every
few tasks. Through httpx's default transport (httpcore, anyio, h11) each cost about a
millisecond of CPU on a small machine, most of the worker's own cost per task; this
transport writes the request in one piece and reads the answer with a stream reader,
some thirty times less. It sits under `httpx.AsyncClient`, so timeouts, errors and
retries are httpx's: a connection that cannot be made raises `httpx.ConnectError`
(`httpx.ConnectTimeout`), one that breaks `httpx.ReadError` / `httpx.WriteError` /
`httpx.RemoteProtocolError`, an answer that takes too long `httpx.ReadTimeout`.

Connections are kept alive and reused one request at a time; an idle one is dropped
after `KEEPALIVE_EXPIRY` (under uvicorn's 5 s) or once the server has closed it. A
request cancelled half way closes its connection. `https://` (and anything a proxy
carries, which httpx routes itself) goes to httpx's own transport, `fallback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle connection is kept (uvicorn closes its side after 5)."""
MAX_IDLE_PER_ORIGIN = 16
MAX_HEAD_BYTES = 64 * 1024
"""Status line and headers of an answer; a longer head is a protocol error."""
MAX_BODY_BYTES = 64 * 1024 * 1024
"""The worker's answers are small; anything this large is not one of them."""
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self, now: float) -> bool:
        """Whether an idle connection may carry another request."""
        return (
            now - self.idle_since < KEEPALIVE_EXPIRY
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive over asyncio streams for `http://`; `fallback` for the rest."""

    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        """Send `http://` requests itself and every other one through `fallback`."""
        self._fallback = fallback or httpx.AsyncHTTPTransport()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def aclose(self) -> None:
        """Close the idle connections (one in use closes when its request ends)."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await self._fallback.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read its whole answer."""
        url = request.url
        if url.scheme != "http" or self._closed:
            return await self._fallback.handle_async_request(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = (url.host, url.port or 80)
        head, body = _encode(request, await request.aread())
        connection = self._take_idle(origin)
        if connection is None:
            connection = await self._connect(request, origin, timeouts.get("connect"))
        try:
            response = await self._exchange(connection, request, head, body, timeouts)
        except BaseException:
            connection.close()
            raise
        if response.headers.get("connection", "").lower() == "close" or self._closed:
            connection.close()
        else:
            self._give_back(origin, connection)
        return response

    # -- connections ----------------------------------------------------------------------
    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, origin: tuple[str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        connection.idle_since = time.monotonic()
        idle.append(connection)
        while len(idle) > MAX_IDLE_PER_ORIGIN:
            idle.pop(0).close()

    async def _connect(
        self, request: httpx.Request, origin: tuple[str, int], timeout: float | None
    ) -> _Connection:
        host, port = origin
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return _Connection(reader, writer)

    # -- one exchange ---------------------------------------------------------------------
    async def _exchange(
        self,
        connection: _Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        writer = connection.writer
        try:
            writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                writer.write(body)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeouts.get("write")):
                    await writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        try:
            async with asyncio.timeout(timeouts.get("read")):
                return await _read_response(connection.reader, request)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("waiting for the answer timed out", request=request) from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError(
                "the server closed the connection before its answer was complete",
                request=request,
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError("answer header line too long", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


def _encode(request: httpx.Request, body: bytes) -> tuple[bytes, bytes]:
    """The request line and headers (with `Content-Length`), and the body."""
    url = request.url
    target = url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    has_length = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        if lower == b"content-length":
            has_length = True
            value = str(len(body)).encode("ascii")
        lines.append(name + b": " + value)
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n", body


async def _read_response(reader: asyncio.StreamReader, request: httpx.Request) -> httpx.Response:
    while True:
        status_line = await reader.readuntil(b"\n")
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(
                f"not an HTTP/1.1 status line: {status_line[:80]!r}", request=request
            )
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        size = len(status_line)
        while True:
            line = await reader.readuntil(b"\n")
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("answer headers too large", request=request)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError(f"bad header line {line[:80]!r}", request=request)
            headers.append((name.strip(), value.strip()))
        if not 100 <= status < 200:
            break  # an interim answer (100 Continue) is skipped
    lowered = {name.lower(): value for name, value in headers}
    if request.method == "HEAD" or status in _NO_BODY_STATUS:
        content = b""
    elif b"chunked" in lowered.get(b"transfer-encoding", b"").lower():
        content = await _read_chunked(reader, request)
    elif b"content-length" in lowered:
        try:
            length = int(lowered[b"content-length"])
        except ValueError:
            raise httpx.RemoteProtocolError("bad Content-Length", request=request) from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise httpx.RemoteProtocolError(f"answer of {length} bytes", request=request)
        content = await reader.readexactly(length)
    else:  # delimited by the end of the connection
        content = await reader.read(MAX_BODY_BYTES + 1)
        while not reader.at_eof() and len(content) <= MAX_BODY_BYTES:
            more = await reader.read(MAX_BODY_BYTES + 1 - len(content))
            if not more:
                break
            content += more
        if len(content) > MAX_BODY_BYTES:
            raise httpx.RemoteProtocolError("answer too large", request=request)
        headers.append((b"Connection", b"close"))
    extensions: dict[str, Any] = {
        "http_version": b"HTTP/1.1",
        "reason_phrase": (parts[2] if len(parts) > 2 else "").encode("latin-1"),
    }
    return httpx.Response(
        status,
        headers=[(n, v) for n, v in headers if n.lower() != b"transfer-encoding"],
        content=content,
        extensions=extensions,
        request=request,
    )


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise httpx.RemoteProtocolError("bad chunk size", request=request) from None
        if size == 0:
            while (await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise httpx.RemoteProtocolError("answer too large", request=request)
        chunks.append(await reader.readexactly(size))
        await reader.readuntil(b"\n")
