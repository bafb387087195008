"""The server's composition root: open the services, build the API, mount the web UI, serve.

The one module that puts the server's parts together: `service` holds the use cases
over the store, `api` serves them over HTTP and knows nothing of the web UI, `web`
adds its pages to an app. `oprun up`, `oprun server` and the tests start here.
"""

from __future__ import annotations

import asyncio
import json

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

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


class _H11(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot read in the API's error shape.

    A request head over `MAX_HEADER_BYTES` (a URL too long) or a malformed one never
    reaches the app: uvicorn answers it 400 itself, in plain text. This answers the
    same 400 as JSON `VALIDATION`, then closes the connection the way that lets the
    client read it: a socket closed with unread input resets the connection and its
    unsent answer is lost, so the answer ends with a FIN and the rest of the request
    is read and dropped for up to `LINGER_SECONDS` before the close.
    """

    LINGER_SECONDS = 2.0
    _refused = False

    def data_received(self, data: bytes) -> None:
        """Read the request; after a refusal, drop what still arrives."""
        if not self._refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """Answer 400 `VALIDATION` and close (the rest of the request is dropped)."""
        error = ValidationError(
            f"the request could not be read: its line and headers must be valid HTTP/1.1 "
            f"within {MAX_HEADER_BYTES} bytes",
            field="head",
            limit=MAX_HEADER_BYTES,
        )
        body = json.dumps(error.to_body()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        for event in (head, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
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
        # h11, not httptools: httptools reads a request head of any size (a 50 MB header
        # would be buffered whole); h11 refuses one over this limit before the app runs.
        http=_H11,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    return uvicorn.Server(config)
