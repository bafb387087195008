"""/v1/events: the project's changes as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from oprun.api.deps import Caller, Svc
from oprun.domain.roles import Permission
from oprun.store.notify import events_key

router = APIRouter(prefix="/v1", tags=["events"])
KEEPALIVE_SECONDS = 15.0


@router.get("/events", operation_id="streamEvents", response_class=StreamingResponse)
async def stream_events(
    request: Request,
    caller: Caller,
    svc: Svc,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events after `after` (or `Last-Event-ID`); without either, from now on."""
    caller.require(Permission.READ)
    store = svc.store
    project = caller.project_id
    if last_event_id and last_event_id.isdigit():
        cursor = int(last_event_id)
    elif after is not None:
        cursor = after
    else:
        cursor = await run_sync(store.last_event_id, project)

    async def stream() -> AsyncIterator[str]:
        position = cursor
        # Name the position at once: a client that reconnects before the first event
        # arrives resumes from here instead of from "now" (which would skip events).
        yield f"retry: 1000\nid: {position}\n\n"
        async with store.notifier.listen(events_key(project)) as signal:
            while not store.notifier.closing and not await request.is_disconnected():
                signal.clear()
                events = await run_sync(store.list_events, project, position, 500)
                for event in events:
                    position = event.id
                    yield f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
                if len(events) == 500:
                    continue
                if not await signal.wait(KEEPALIVE_SECONDS):
                    yield ": keepalive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
