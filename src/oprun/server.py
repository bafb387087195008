"""The server's composition root: open the services, build the API, mount the web UI, serve.

The one module that puts the server's parts together: `service` holds the use cases
over the store, `api` serves them over HTTP and knows nothing of the web UI, `web`
adds its pages to an app. `oprun up`, `oprun server` and the tests start here.
"""

from __future__ import annotations

import asyncio
import json

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oprun import web
from oprun.api.app import create_app
from oprun.domain.errors import ValidationError
from oprun.domain.limits import MAX_HEADER_BYTES
from oprun.service import Bootstrapped, Services, open_services

__all__ = ["Bootstrapped", "build_app", "open_services", "uvicorn_server"]


def build_app(services: Services, *, run_reaper: bool = True) -> FastAPI:
    """The server's app: the API over `services` with the web UI mounted on it.

    With `run_reaper`, lapsed leases are reaped in the background (see `create_app`).
    """
    app = create_app(services, run_reaper=run_reaper)
    web.install(app)
    return app


class _HttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a limit on the request head and our 400.

    httptools reads a request head of any size: a header without an end is buffered
    for as long as it grows. Here a head is fed to the parser `SLICE` bytes at a time
    and counted, and one that grows past `MAX_HEADER_BYTES` is refused (within a slice:
    the slice a head begins in counts whole). What follows a request in the read that
    ended it is fed at once, so a pipelined request's head may hold one socket read
    more before the count applies. A head that is too long or malformed never reaches
    the app: this answers 400 `VALIDATION` in the API's error shape, then closes the
    connection the way that lets the client read it: a socket closed with unread input
    resets the connection and its unsent answer is lost, so the answer ends with a FIN
    and the rest of the request is read and dropped for up to `LINGER_SECONDS` before
    the close.
    """

    LINGER_SECONDS = 2.0
    SLICE = 1024
    _refused = False
    _in_head = True
    """Whether the bytes that arrive belong to a request head (none has begun counts)."""
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting a head's bytes; drop everything after a refusal."""
        rest = memoryview(data)
        while rest and self._in_head and not self._refused:
            piece, rest = rest[: self.SLICE], rest[self.SLICE :]
            super().data_received(piece)  # type: ignore[arg-type]  # httptools reads buffers
            if self.transport.get_protocol() is not self:
                return  # upgraded (a WebSocket): the connection is the new protocol's now
            if self._in_head and not self._refused:
                self._head_bytes += len(piece)
                if self._head_bytes > MAX_HEADER_BYTES:
                    self.send_400_response("head too long")
                    return
        if rest and not self._refused:
            super().data_received(rest)  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        """The head ended: what follows is the body."""
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request ended: what follows begins the next head."""
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer 400 `VALIDATION` and close (the rest of the request is dropped)."""
        if self._refused:
            return
        error = ValidationError(
            f"the request could not be read: its line and headers must be valid HTTP/1.1 "
            f"within {MAX_HEADER_BYTES} bytes",
            field="head",
            limit=MAX_HEADER_BYTES,
        )
        body = json.dumps(error.to_body()).encode()
        head = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER_SECONDS, self.transport.close)


def uvicorn_server(services: Services, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the API and web UI over `services` (call `.serve()` in a loop)."""
    config = uvicorn.Config(
        build_app(services),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # the app writes its own (oprun.api.observability)
        log_config=None,  # uvicorn's lines go through oprun.logs, in its format
        lifespan="on",
        timeout_graceful_shutdown=5,
        # httptools (C, llhttp), a tenth less CPU per request than h11 (pure Python),
        # with the head limit h11 had built in (see `_HttpTools`).
        http=_HttpTools,
    )
    return uvicorn.Server(config)
