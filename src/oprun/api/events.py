"""/v1/events: the project's changes as Server-Sent Events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from oprun.api.deps import Caller, MaybePosition, Svc

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events", operation_id="streamEvents", response_class=StreamingResponse)
async def stream_events(
    request: Request,
    caller: Caller,
    svc: Svc,
    after: MaybePosition = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events after `after` (or `Last-Event-ID`); without either, from now on."""
    position = await svc.events.start(caller, after=after, last_event_id=last_event_id)

    async def stream() -> AsyncIterator[str]:
        # Name the position at once: a client that reconnects before the first event
        # arrives resumes from here instead of from "now" (which would skip events).
        yield f"retry: 1000\nid: {position}\n\n"
        followed = svc.events.follow(caller, position, request.is_disconnected)
        async with contextlib.aclosing(followed) as events:
            async for event in events:
                if event is None:
                    yield ": keepalive\n\n"
                else:
                    yield f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
