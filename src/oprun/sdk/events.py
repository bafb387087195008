"""`client.events`: the project's changes as they happen, over Server-Sent Events.

::

    with oprun.Client() as client:
        for event in client.events.stream(types={"operation.status"}):
            print(event.id, event.type, event.entity_id, event.data)

The stream reconnects by itself, with ``Last-Event-ID``, after a dropped connection
or a server restart, so no event is missed or repeated; it gives up (raising
`Unavailable`) only after `patience` seconds without reaching the server. An
`AsyncClient` has the same, as an async iterator::

    async with contextlib.aclosing(client.events.stream(after=0)) as events:
        async for event in events:
            ...

The server keeps events; ``after=0`` replays them from the first one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator
from typing import TYPE_CHECKING

import httpx
import pydantic

from oprun.domain import models
from oprun.domain.errors import ServerError, ValidationError
from oprun.sdk import _endpoints as E
from oprun.sdk._requests import (
    Call,
    ConnectionSettings,
    connection_error,
    error_from_response,
    unexpected,
)
from oprun.sdk._retry import OUTAGE_PATIENCE, HttpRetry
from oprun.sdk._sse import SSEDecoder

if TYPE_CHECKING:
    from oprun.sdk.async_client import AsyncClient
    from oprun.sdk.client import Client

STREAM_READ_TIMEOUT = 45.0
"""Seconds of silence after which a stream counts as dropped (the server sends a
keepalive comment every 15 s)."""
DEFAULT_RECONNECT_SECONDS = 1.0
"""Delay before reconnecting after the server ended the stream, unless it sent ``retry``."""


class EventCursor:
    """Where an event stream is, which events it wants, and when to reconnect. No I/O.

    One cursor lives as long as the stream; each connection gets a fresh decoder.
    """

    def __init__(
        self,
        url: str,
        after: int | None,
        *,
        types: Iterable[str] | None,
        entity_id: str | None,
        patience: float | None,
        policy: HttpRetry,
    ) -> None:
        if after is not None and after < 0:
            raise ValidationError(f"after must be 0 or more, got {after}", field="after")
        self.url = url
        self.position = after
        self.types = frozenset([types] if isinstance(types, str) else types or ())
        self.entity_id = entity_id
        self.patience = patience
        self.policy = policy
        self.failures = 0
        self.outage_since: float | None = None
        self.decoder = SSEDecoder()
        self.reconnect_after = DEFAULT_RECONNECT_SECONDS

    def connect(
        self, settings: ConnectionSettings, *, failover: bool = False
    ) -> tuple[Call[None], dict[str, str], httpx.Timeout]:
        """The request for the next connection: the call, its headers and its timeout.

        With `failover` (another endpoint could take the stream), connecting gives up
        sooner, as for any call (`ConnectionSettings.timeout_for`).
        """
        self.decoder = SSEDecoder()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.position is not None:
            headers["Last-Event-ID"] = str(self.position)
        call = E.stream_events(self.position)
        timeout = settings.timeout_for(call, failover=failover)
        read = max(settings.timeout, STREAM_READ_TIMEOUT)
        return call, headers, httpx.Timeout(settings.timeout, connect=timeout.connect, read=read)

    def opened(self, response: httpx.Response) -> None:
        """The server accepted the stream: the outage, if any, is over.

        Raises:
            ServerError: the answer is not an event stream (a proxy's page?).
        """
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            raise unexpected(response, ValueError(f"expected text/event-stream, got {kind!r}"))
        self.failures = 0
        self.outage_since = None

    def feed(self, text: str) -> list[models.Event]:
        """The wanted events completed by the next piece of the stream, in order.

        Events at or before the position (already yielded) are skipped, so a replay
        after a reconnect never repeats one.
        """
        found: list[models.Event] = []
        for message in self.decoder.feed(text):
            try:
                event = models.Event.model_validate_json(message.data)
            except pydantic.ValidationError as exc:
                raise ServerError(f"unreadable event {message.id or '?'}: {exc}") from exc
            if self.position is not None and event.id <= self.position:
                continue
            self.position = event.id
            if self.types and event.type not in self.types:
                continue
            if self.entity_id is not None and event.entity_id != self.entity_id:
                continue
            found.append(event)
        last = self.decoder.last_event_id
        if last.isdigit() and (self.position is None or int(last) > self.position):
            self.position = int(last)  # an id sent with no data: the server's position
        if self.decoder.retry is not None:
            self.reconnect_after = self.decoder.retry / 1000
        return found

    def delay(
        self, outcome: httpx.Response | Exception | None, now: float, *, elsewhere: bool = False
    ) -> float:
        """Seconds to wait before reconnecting after `outcome`, or the error to give up with.

        `outcome` is None when the server ended the stream (it restarts, or a proxy
        cut it): reconnect after the server's ``retry`` time. A transport error or a
        429/503 answer is retried with backoff for `patience` seconds of outage, or
        at once when it can go to another endpoint (`elsewhere`, see
        `Endpoints.elsewhere`); anything else is raised at once.

        Raises:
            OprunError: the error of the answer, or `Unavailable` once patience runs out.
            Exception: any other `outcome` exception, as it is.
        """
        if outcome is None:
            return self.reconnect_after
        if self.outage_since is None:
            self.outage_since = now
        left = None if self.patience is None else self.patience - (now - self.outage_since)
        if left is None:
            left = float("inf")
        delay = self.policy.delay(E.stream_events(self.position), self.failures, outcome, left=left)
        self.failures += 1
        if delay is not None:
            return 0.0 if elsewhere else delay
        if isinstance(outcome, httpx.Response):
            raise error_from_response(outcome)
        if isinstance(outcome, httpx.RequestError):
            raise connection_error(self.url, outcome)
        raise outcome


class Events:
    """`client.events`: the project's events, streamed as they happen."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __iter__(self) -> Iterator[models.Event]:
        """Every event from now on: ``for event in client.events: ...``."""
        return self.stream()

    def stream(
        self,
        after: int | None = None,
        *,
        types: Iterable[str] | None = None,
        entity_id: str | None = None,
        patience: float | None = OUTAGE_PATIENCE,
    ) -> Generator[models.Event, None, None]:
        """Events as they happen, oldest first, reconnecting after a drop; never ends by itself.

        Args:
            after: yield events after this event id (0 replays them all); None
                starts from now.
            types: only events of these types (``operation.created``,
                ``operation.status``, ``operation.progress``, ``operation.deleted``,
                ``worker.registered``, ...).
            entity_id: only events about this operation, worker, ... id.
            patience: seconds of outage (no connection, or 429/503 answers) after
                which the stream raises; None keeps trying for ever.

        Raises:
            Unavailable: the server could not be reached for `patience` seconds.
            OprunError: the server refused the stream (401, 403, ...).
        """
        cursor = EventCursor(
            self._client.url,
            after,
            types=types,
            entity_id=entity_id,
            patience=patience,
            policy=self._client._retry,
        )
        http, endpoints = self._client._http, self._client._endpoints
        while True:
            endpoint = self._client._endpoint()
            call, headers, timeout = cursor.connect(
                self._client._settings, failover=endpoints.several
            )
            outcome: httpx.Response | Exception | None = None
            try:
                with http.stream(
                    call.method,
                    endpoint.join(call.path),
                    params=call.query(),
                    headers={**headers, **endpoint.headers},
                    extensions=endpoint.extensions,
                    timeout=timeout,
                ) as response:
                    endpoints.observe(endpoint, response)
                    if response.status_code >= 400:
                        response.read()
                        outcome = response
                    else:
                        cursor.opened(response)
                        for text in response.iter_text():
                            yield from cursor.feed(text)
            except httpx.TransportError as exc:
                outcome = exc
                endpoints.observe(endpoint, exc)
            elsewhere = outcome is not None and endpoints.elsewhere(endpoint, outcome)
            delay = cursor.delay(outcome, time.monotonic(), elsewhere=elsewhere)
            if delay:
                self._client._sleep(delay)


class AsyncEvents:
    """`client.events` of an `AsyncClient`: the project's events, streamed as they happen."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __aiter__(self) -> AsyncIterator[models.Event]:
        """Every event from now on: ``async for event in client.events: ...``."""
        return self.stream()

    async def stream(
        self,
        after: int | None = None,
        *,
        types: Iterable[str] | None = None,
        entity_id: str | None = None,
        patience: float | None = OUTAGE_PATIENCE,
    ) -> AsyncGenerator[models.Event, None]:
        """Events as they happen, reconnecting after a drop (see `Events.stream`).

        Close it when you stop early (``contextlib.aclosing``), so that its
        connection is closed at once.
        """
        cursor = EventCursor(
            self._client.url,
            after,
            types=types,
            entity_id=entity_id,
            patience=patience,
            policy=self._client._retry,
        )
        http, endpoints = self._client._http, self._client._endpoints
        while True:
            endpoint = await self._client._endpoint()
            call, headers, timeout = cursor.connect(
                self._client._settings, failover=endpoints.several
            )
            outcome: httpx.Response | Exception | None = None
            try:
                async with http.stream(
                    call.method,
                    endpoint.join(call.path),
                    params=call.query(),
                    headers={**headers, **endpoint.headers},
                    extensions=endpoint.extensions,
                    timeout=timeout,
                ) as response:
                    endpoints.observe(endpoint, response)
                    if response.status_code >= 400:
                        await response.aread()
                        outcome = response
                    else:
                        cursor.opened(response)
                        async for text in response.aiter_text():
                            for event in cursor.feed(text):
                                yield event
            except httpx.TransportError as exc:
                outcome = exc
                endpoints.observe(endpoint, exc)
            elsewhere = outcome is not None and endpoints.elsewhere(endpoint, outcome)
            delay = cursor.delay(outcome, time.monotonic(), elsewhere=elsewhere)
            if delay:
                await self._client._sleep(delay)
