"""What operators see of the API: request ids, the access log, request metrics, `/metrics`.

`RequestObserver` wraps the whole app (outside the error middleware, so it sees
the status a crash was answered with). For each HTTP request it:

- takes the caller's `X-Request-ID` when it is a sane token (1 to 128 of
  ``A-Z a-z 0-9 . _ : / + = @ -``), else makes one, and echoes it in the response;
- binds a `oprun.logs.RequestContext` so every log line of the request carries the
  request id, the caller's project and the ids its route names;
- counts the request by method, route *template* (``/v1/operations/{operation_id}``,
  never the raw path: one series per route, not per operation) and status, and
  times it; counts the bytes of the request and of the response (start line,
  headers, body; uvicorn's own Date and Server headers are not seen here);
- writes one access log line (method, route, path, status, duration, request id,
  project); not for `/metrics` and the health probes unless ``OPRUN_ACCESS_LOG=all``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oprun.api.deps import Svc, principal
from oprun.api.routing import include
from oprun.domain.ids import random_hex
from oprun.logs import ACCESS_LOGGER, RequestContext, bound_request
from oprun.service import Services
from oprun.service.metrics import CONTENT_TYPE, Metrics

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
PROBES = frozenset({"/metrics", "/v1/healthz", "/v1/readyz"})
"""Routes scraped or probed every few seconds: left out of the access log by default."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"
"""The route label of a request no route matched (a 404 for an unknown path)."""

access = logging.getLogger(ACCESS_LOGGER)


def request_id_of(header: bytes | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header is not None:
        try:
            candidate = header.decode("ascii")
        except UnicodeDecodeError:
            candidate = ""
        if _SANE_REQUEST_ID.fullmatch(candidate):
            return candidate
    return random_hex(16)


_STATUS_LINE = len(b"HTTP/1.1 200 OK\r\n\r\n")
"""The bytes of a typical status line and of the blank line that ends the head."""
_REQUEST_LINE = len(b"  HTTP/1.1\r\n\r\n")
"""The fixed bytes of a request line (method, target and version) and of the blank line."""


def _header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"


def request_head_bytes(scope: Scope) -> int:
    """The bytes of a request's head: its request line, headers and the blank line."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    if scope.get("query_string"):
        target += 1  # the "?"
    return (
        _REQUEST_LINE
        + len(scope.get("method", ""))
        + target
        + _header_bytes(scope.get("headers") or ())
    )


def route_of(scope: Scope) -> str:
    """The template of the route that served `scope` (known once it was routed)."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return route.path + "/{path}"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestObserver:
    """ASGI middleware: request id, log context, request metrics and the access log."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log: str) -> None:
        """Observe `app`'s requests; `access_log` is ``on``, ``all`` or ``off``."""
        self.app = app
        self._metrics = metrics
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (or pass anything else through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or ()).get(b"x-request-id")
        context = RequestContext(request_id_of(header), scope=scope)
        status = 500
        started = time.perf_counter()
        read = request_head_bytes(scope)
        sent = 0

        async def listen() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            return message

        async def answer(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = context.request_id
                sent += _STATUS_LINE + _header_bytes(message.get("headers") or ())
            await send(message)

        with bound_request(context):
            try:
                await self.app(scope, listen, answer)
            finally:
                self._metrics.request_bytes.inc(read)
                self._metrics.response_bytes.inc(sent)
                self._observe(scope, context, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
        method = scope.get("method", "")
        label = method if method in _METHODS else "OTHER"
        route = route_of(scope)
        self._metrics.requests.labels(label, route, str(status)).inc()
        self._metrics.request_seconds.labels(label, route).observe(seconds)
        if self._access_log == "off" or (self._access_log != "all" and route in PROBES):
            return
        access.info(
            "request",
            extra={
                "fields": {
                    "method": label,
                    "route": route,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                }
            },
        )


router = APIRouter(tags=["operators"])


async def _metrics_reader(request: Request, svc: Svc) -> None:
    """Authorize a scrape: open with OPRUN_METRICS_PUBLIC=1, else an operator's token."""
    if not svc.settings.metrics_public:
        # check_reader reads the store once (the first project): not on the event loop.
        await run_in_threadpool(svc.metrics.check_reader, await principal(request, svc))


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
def metrics(svc: Svc, _: Annotated[None, Depends(_metrics_reader)]) -> Response:
    """The server's metrics in Prometheus' text format (see docs/operations.md).

    They describe every project, so they need an admin token of the server's first
    project, unless the server runs with `OPRUN_METRICS_PUBLIC=1`.
    """
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE)


def install(app: FastAPI, services: Services) -> None:
    """Serve `/metrics` and observe every request of `app` (call it after other middleware)."""
    include(app, router)
    app.add_middleware(
        RequestObserver, metrics=services.metrics, access_log=services.settings.access_log
    )
