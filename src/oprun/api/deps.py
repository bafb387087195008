"""Request dependencies: the services and the authenticated caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from oprun.service import Principal, Services


def services(request: Request) -> Services:
    """The services of this app."""
    svc: Services = request.app.state.services
    return svc


def principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """The caller, from `Authorization: Bearer <token>` or the web session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        secret = request.cookies.get("oprun_session", "")
    return svc.auth.authenticate(secret.strip() or None)


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
