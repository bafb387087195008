"""Use case of following a project: its events from a position on, as they happen."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from anyio.to_thread import run_sync

from oprun.domain.models import Event
from oprun.domain.roles import Permission
from oprun.domain.text import INT64_MAX
from oprun.service.auth import Principal
from oprun.store import Store
from oprun.store.notify import events_key

BATCH = 500
"""Events read at a time; a full batch is followed at once by the next."""
KEEPALIVE_SECONDS = 15.0
"""Quiet time after which a follower is told the stream is still alive."""


class EventService:
    """The project's changes, for streams that resume where a client left off."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def latest(self, principal: Principal) -> int:
        """The id of the project's latest event (0 before any): a page follows from there."""
        principal.require(Permission.READ)
        return self._store.last_event_id(principal.project_id)

    async def start(
        self, principal: Principal, *, after: int | None, last_event_id: str | None
    ) -> int:
        """Where a stream begins: the event id after which it sends.

        A reconnecting client's `last_event_id` (the SSE `Last-Event-ID`) wins when it
        is a number (ASCII digits, within 64 bits; anything else counts as absent, as
        an unknown id would); else `after`; else the latest event, so the stream carries only
        what happens from now on. Raises `AccessDenied` unless the caller may read.
        """
        principal.require(Permission.READ)
        if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            position = int(last_event_id)
            if position <= INT64_MAX:
                return position
        if after is not None:
            return after
        return await run_sync(self._store.last_event_id, principal.project_id)

    async def follow(
        self, principal: Principal, position: int, gone: Callable[[], Awaitable[bool]]
    ) -> AsyncGenerator[Event | None, None]:
        """The project's events after `position`, oldest first, then each as it happens.

        Yields None after `KEEPALIVE_SECONDS` without an event (time to say the stream
        is alive). Ends when the server stops or `gone()` says the client left; close
        it (`contextlib.aclosing`) to stop listening at once.
        """
        principal.require(Permission.READ)
        project = principal.project_id
        notifier = self._store.notifier
        async with notifier.listen(events_key(project)) as signal:
            while not notifier.closing and not await gone():
                signal.clear()
                events = await run_sync(self._store.list_events, project, position, BATCH)
                for event in events:
                    position = event.id
                    yield event
                if len(events) == BATCH:
                    continue
                if not await signal.wait(KEEPALIVE_SECONDS):
                    yield None
