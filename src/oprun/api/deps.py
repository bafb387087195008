"""Request dependencies: the services and the authenticated caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from oprun.domain.errors import AccessDenied
from oprun.domain.text import INT32_MAX, INT64_MAX
from oprun.logs import current_request
from oprun.service import Principal, Services

SESSION_COOKIE = "oprun_session"
"""The web UI's session cookie: it holds the API token (HttpOnly, SameSite=Strict)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def services(request: Request) -> Services:
    """The services of this app."""
    svc: Services = request.app.state.services
    return svc


def same_origin(request: Request) -> bool:
    """Whether the request says it comes from a page of this server (`Origin`, else `Referer`).

    Compares the source's host and port with the `Host` the request was sent to, so it
    holds behind a TLS-terminating proxy that keeps `Host`.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


def _noted(caller: Principal, client: str | None) -> Principal:
    """`caller`, now named in the request's log lines (its project), calling from `client`."""
    context = current_request()
    if context is not None:
        context.project_id = caller.project_id
    return caller.calling(client, request_id())


def request_id() -> str | None:
    """The current request's id (`X-Request-ID`), for the audit log."""
    context = current_request()
    return None if context is None else context.request_id


def client_address(request: Request) -> str | None:
    """The address the request came from: the peer of its connection.

    `X-Forwarded-For` is not read: anyone can send it. Behind a reverse proxy every
    request comes from the proxy's address, so failed authentications are counted
    for all its clients together.
    """
    return request.client.host if request.client else None


async def principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """The caller, from `Authorization: Bearer <token>` or the web session cookie.

    A cookie-authenticated request that changes state (any method but GET, HEAD,
    OPTIONS) must come from this server's own pages: the cookie is SameSite=Strict,
    and its `Origin` (or `Referer`) must name this server, else 403 (CSRF defence).
    A client address that failed too often is answered 429 (`Authenticator`).
    A token this process knows is answered from memory, on the event loop; any
    other goes to the store in the thread pool.
    """
    client = client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() == "bearer":
        found = await _authenticate(svc, secret.strip() or None, client, "bearer")
        return _noted(found, client)
    cookie = request.cookies.get(SESSION_COOKIE, "").strip() or None
    found = await _authenticate(svc, cookie, client, "session")
    caller = _noted(found, client)
    if request.method not in SAFE_METHODS and not same_origin(request):
        raise AccessDenied(
            "cross-site request refused: a request signed in with the session cookie "
            "must come from this server's own pages (check the Origin header)",
            reason="origin",
        )
    return caller


async def _authenticate(
    svc: Services, secret: str | None, client: str | None, via: str
) -> Principal:
    known = svc.auth.known(secret, client)
    if known is not None:
        return known
    return await run_in_threadpool(
        svc.auth.authenticate, secret, client, request_id=request_id(), via=via
    )


Position = Annotated[int, Query(ge=0, le=INT64_MAX)]
"""A sequence number in a query (`after` of logs and events): what a 64-bit column holds."""
MaybePosition = Annotated[int | None, Query(ge=0, le=INT64_MAX)]
VersionNumber = Annotated[int | None, Query(ge=1, le=INT32_MAX)]
"""An action version in a query: what its 32-bit column holds."""

Svc = Annotated[Services, Depends(services)]
Caller = Annotated[Principal, Depends(principal)]


async def hangup(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client hangs up, for long polls (a FastAPI yield dependency).

    Reading the request's ASGI channel keeps the server reading the socket, so a
    client that dies (even by SIGKILL) is noticed while the poll waits.
    """
    event = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                event.set()
                return

    task = asyncio.create_task(watch())
    try:
        yield event
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Hangup = Annotated[asyncio.Event, Depends(hangup)]
