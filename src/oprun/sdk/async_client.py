"""`AsyncClient`: the asyncio SDK, with the same resources and method names as `Client`.

Example::

    async with oprun.AsyncClient() as client:
        op = await client.operations.invoke("resize", {"width": 640})
        op = await op.wait_until_done(timeout=600)
        async for record in op.logs():
            print(record.line)

Requests are built and answers read by the same code as `Client`'s; only sending
differs (``httpx.AsyncClient``, ``asyncio.sleep``). Nothing runs in a thread.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx

from oprun.domain import models
from oprun.domain.audit import AuditKind, AuditRecord
from oprun.domain.limits import MAX_PAGE_SIZE
from oprun.domain.roles import Role
from oprun.domain.status import OperationStatus
from oprun.sdk import _endpoints as E
from oprun.sdk._endpoints import ActionRef, ProjectCreated, TokenCreated
from oprun.sdk._failover import Endpoint, Endpoints, aresolve, proxied
from oprun.sdk._requests import Call, ConnectionSettings, finish
from oprun.sdk._retry import OUTAGE_PATIENCE, Attempts, HttpRetry, http_retry
from oprun.sdk._snapshot import statuses
from oprun.sdk._templates import TemplateSource, read_template
from oprun.sdk.client import (
    LOG_FOLLOW_SECONDS,
    LONG_POLL_SECONDS,
    DefinesActions,
)
from oprun.sdk.errors import OperationFailed
from oprun.sdk.events import AsyncEvents
from oprun.sdk.operation import DEFAULT_RAISE_ON, AsyncNoOp, AsyncOperation

T = TypeVar("T")


class AsyncClient:
    """A connection to an oprun server for asyncio code; see `Client` for the arguments.

    Every method is a coroutine, except the listing ones (`list`, `versions`,
    `logs`, `watch`, `events.stream`), which return async iterators for ``async for``.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        retry: HttpRetry | None = None,
        profile: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = ConnectionSettings.resolve(url, token, timeout, profile)
        self._retry = http_retry(retry, retries)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._endpoints = Endpoints(self._settings.urls, lookup=transport is None and not proxied())
        self._http = httpx.AsyncClient(
            headers=self._settings.headers(),
            timeout=self._settings.timeout,
            transport=transport,
        )
        self.actions = AsyncActions(self)
        self.operations = AsyncOperations(self)
        self.session_actions = AsyncSessionActions(self)
        self.queues = AsyncQueues(self)
        self.workers = AsyncWorkers(self)
        self.tokens = AsyncTokens(self)
        self.events = AsyncEvents(self)
        self.projects = AsyncProjects(self)
        self.audit = AsyncAudit(self)

    @property
    def url(self) -> str:
        """The server this client talks to; several URLs are comma-separated."""
        return self._settings.url

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    async def health(self) -> dict[str, Any]:
        """The server's liveness answer (``{"status": "ok", ...}``); needs no token."""
        return await self._send(E.health())

    async def close(self) -> None:
        """Close the connections this client holds."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------
    async def _send(self, call: Call[T], *, until: float | None = None) -> T:
        """Send a call, retrying it when that is safe, and return its parsed answer.

        With `until` (a `time.monotonic()` deadline), a failed call that is safe to
        repeat is retried for as long as the deadline allows, not `retries` times.
        """
        attempts = Attempts(self._retry, call, self._endpoints, until=until)
        while True:
            endpoint = await self._endpoint()
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(
                    call.method,
                    endpoint.join(call.path),
                    params=call.query(),
                    json=call.json,
                    headers=endpoint.headers,
                    extensions=endpoint.extensions,
                    timeout=self._settings.timeout_for(call, failover=self._endpoints.several),
                )
            except httpx.RequestError as exc:
                outcome = exc
            delay = attempts.after(endpoint, outcome)
            if delay is None:
                return finish(call, outcome, endpoint.label)
            if delay:
                await self._sleep(delay)

    async def _endpoint(self) -> Endpoint:
        """The endpoint of the next request, once any DNS name due a lookup is looked up."""
        for url, host, port in self._endpoints.lookups_due():
            self._endpoints.resolved(url, await aresolve(host, port))
        return self._endpoints.pick()

    async def _pages(
        self,
        make: Callable[[str | None, int | None], Call[models.Page[T]]],
        limit: int | None,
        page_size: int | None,
    ) -> AsyncIterator[T]:
        """Every item of a paged list, fetching pages as they are needed."""
        size = E.page_size(limit, page_size)
        cursor: str | None = None
        count = 0
        while limit is None or count < limit:
            page = await self._send(make(cursor, size))
            for item in page.items:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor


class AsyncActions:
    """`client.actions`: named, versioned action definitions."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def register(self, definition_or_app: models.ActionDefinition) -> models.Action: ...
    @overload
    async def register(self, definition_or_app: DefinesActions) -> builtins.list[models.Action]: ...
    async def register(
        self, definition_or_app: models.ActionDefinition | DefinesActions
    ) -> models.Action | builtins.list[models.Action]:
        """Save an action definition as a new version (or find the identical one).

        Given an object with ``definitions()`` (an `oprun.App`), saves each of its
        actions and returns the saved versions in order.
        """
        if isinstance(definition_or_app, models.ActionDefinition):
            return await self._client._send(E.save_action(definition_or_app))
        return [await self._client._send(E.save_action(d)) for d in definition_or_app.definitions()]

    async def register_template(
        self,
        name: str,
        template: TemplateSource,
        *,
        queue: str | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        retry: models.RetryPolicy | Mapping[str, Any] | None = None,
        requirements: models.Requirements | Mapping[str, Any] | None = None,
        quarantine_after: int | None = None,
        cacheable: bool | None = None,
        description: str | None = None,
    ) -> models.Action:
        """Save an Open Job Description job template as a version of the openjd action `name`.

        The arguments are `Client.actions.register_template`'s. The template file is
        read before anything is sent (a small local read, done in place).
        """
        definition = E.openjd_definition(
            name,
            template=read_template(template),
            queue=queue,
            timeout=timeout,
            max_attempts=max_attempts,
            retry=retry,
            requirements=requirements,
            quarantine_after=quarantine_after,
            cacheable=cacheable,
            description=description,
        )
        return await self._client._send(E.save_action(definition))

    async def get(self, name: str, version: int | None = None) -> models.Action:
        """An action's latest version, or the given `version`."""
        return await self._client._send(E.get_action(name, version))

    def list(self, *, limit: int | None = None) -> AsyncIterator[models.Action]:
        """The latest version of every action, page after page (at most `limit`)."""
        return self._client._pages(E.list_actions, limit, None)

    def versions(self, name: str, *, limit: int | None = None) -> AsyncIterator[models.Action]:
        """Every version of an action, newest first."""
        return self._client._pages(
            lambda cursor, size: E.action_versions(name, cursor, size), limit, None
        )


class AsyncOperations:
    """`client.operations`: invoke actions and follow what they do."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def _snapshot(self, model: models.Operation) -> AsyncOperation:
        return AsyncOperation(self._client, model)

    async def invoke(
        self,
        action: ActionRef,
        parameters: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        action_digest: str | None = None,
    ) -> AsyncOperation | AsyncNoOp:
        """Invoke an action; returns its operation, or an `AsyncNoOp` when nothing needs doing.

        See `Client.operations.invoke` for the arguments.
        """
        body = E.invocation(
            action,
            parameters,
            version=version,
            idempotency_key=idempotency_key,
            timeout=timeout,
            queue=queue,
            action_digest=action_digest,
        )
        model = await self._client._send(E.invoke(body))
        return AsyncNoOp(body.action) if model is None else self._snapshot(model)

    async def invoke_many(
        self, invocations: Iterable[models.Invocation | Mapping[str, Any]]
    ) -> builtins.list[AsyncOperation | AsyncNoOp]:
        """Invoke up to 1,000 actions in one request; one answer per invocation, in order."""
        bodies = [E.as_invocation(i) for i in invocations]
        models_ = await self._client._send(E.invoke_many(bodies))
        return [
            AsyncNoOp(b.action) if m is None else self._snapshot(m)
            for b, m in zip(bodies, models_, strict=False)
        ]

    async def get(self, operation_id: str) -> AsyncOperation:
        """One operation, as it is now."""
        return self._snapshot(await self._client._send(E.get_operation(operation_id)))

    async def list(
        self,
        status: OperationStatus | str | None = None,
        action: str | None = None,
        created_by: str | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[AsyncOperation]:
        """Operations, newest first, filtered; pages are fetched as you iterate."""

        def page(cursor: str | None, size: int | None) -> Call[models.Page[models.Operation]]:
            return E.list_operations(
                status=status, action=action, created_by=created_by, cursor=cursor, limit=size
            )

        async for model in self._client._pages(page, limit, page_size):
            yield self._snapshot(model)

    async def cancel(self, operation_id: str) -> AsyncOperation:
        """Request cancellation; returns the operation as the server now has it."""
        return self._snapshot(await self._client._send(E.cancel_operation(operation_id)))

    async def retry(self, operation_id: str) -> AsyncOperation:
        """A new operation with the same action version and parameters."""
        return self._snapshot(await self._client._send(E.retry_operation(operation_id)))

    async def delete(self, operation_id: str) -> None:
        """Delete a finished operation; `Conflict` while it runs."""
        await self._client._send(E.delete_operation(operation_id))

    async def watch(
        self,
        operation_id: str,
        *,
        every: float = 1.0,
        timeout: float | None = None,
        poll_interval: float | None = None,
    ) -> AsyncIterator[AsyncOperation]:
        """Snapshots of an operation until it ends (the last one yielded is done).

        A server that cannot be reached or answers 429 or 503 meanwhile is asked
        again, with backoff, until `timeout` (without one, for up to
        `OUTAGE_PATIENCE` seconds of outage): a wait rides out a server restart.

        Raises:
            TimeoutError: still not done after `timeout` seconds.
            Unavailable: the server could not be reached until the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            until = deadline if deadline is not None else time.monotonic() + OUTAGE_PATIENCE
            if poll_interval is None:
                wait = every if left is None else max(0.0, min(every, left))
                call = E.wait_operation(operation_id, wait)
            else:
                call = E.get_operation(operation_id)
            model = await self._client._send(call, until=until)
            yield self._snapshot(model)
            if model.status.is_terminal():
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"operation {operation_id} is still {model.status.value} "
                    f"after {timeout:g} seconds"
                )
            if poll_interval is not None:
                await self._client._sleep(
                    poll_interval if left is None else min(poll_interval, left)
                )

    async def wait(
        self, operation_id: str, timeout: float | None = None, *, poll_interval: float | None = None
    ) -> AsyncOperation:
        """Wait until the operation ends; returns the resolved snapshot.

        Raises:
            TimeoutError: still not done after `timeout` seconds.
        """
        last: AsyncOperation | None = None
        async for snapshot in self.watch(
            operation_id, every=LONG_POLL_SECONDS, timeout=timeout, poll_interval=poll_interval
        ):
            last = snapshot
        assert last is not None
        return last

    async def wait_until_done(
        self,
        operation_id: str,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> AsyncOperation:
        """Wait as `wait()` does; raise `OperationFailed` if it ends in a `raise_on` status.

        Args:
            operation_id: the operation to wait for.
            timeout: seconds to wait at most.
            raise_on: statuses that raise (FAILED by default).
            raise_exception_if: Datature's name for `raise_on`; Datature's status
                names (``"Errored"``, ``"Cancelled"``, ``"Finished"``) are understood.

        Raises:
            OperationFailed: the resolved status is in `raise_on` (FAILED by default).
            TimeoutError: still not done after `timeout` seconds.
        """
        if raise_exception_if is None:
            bad = statuses(raise_on)
        else:
            bad = statuses(raise_exception_if, aliases=True)
        op = await self.wait(operation_id, timeout)
        if op.status in bad:
            raise OperationFailed(op)
        return op

    async def logs(
        self, operation_id: str, *, follow: bool = False, after: int = 0
    ) -> AsyncIterator[models.LogRecord]:
        """Its log records after sequence number `after`, in order (``async for``).

        With `follow`, long-polls for new lines and stops once the operation has
        ended and every line has been read.
        """
        send = self._client._send
        seq = after
        while True:
            wait = LOG_FOLLOW_SECONDS if follow else 0.0
            page = await send(
                E.operation_logs(operation_id, after=seq, limit=MAX_PAGE_SIZE, wait=wait)
            )
            for record in page.items:
                seq = max(seq, record.seq)
                yield record
            if page.items and (follow or len(page.items) >= MAX_PAGE_SIZE):
                continue
            if not follow:
                return
            if (await send(E.get_operation(operation_id))).status.is_terminal():
                async for record in self.logs(operation_id, after=seq):
                    yield record
                return

    def tasks(
        self, operation_id: str, *, limit: int | None = None, page_size: int | None = None
    ) -> AsyncIterator[models.Task]:
        """The operation's tasks, oldest first (``async for``); pages are fetched as needed.

        `limit` caps how many are yielded (all when None).
        """
        return self._client._pages(
            lambda cursor, size: E.operation_tasks(operation_id, cursor, size), limit, page_size
        )

    def session_actions(
        self, operation_id: str, *, limit: int | None = None, page_size: int | None = None
    ) -> AsyncIterator[models.SessionAction]:
        """Every attempt at the operation's work, oldest first (``async for``).

        Each session's attempts come in the order they ran; pages are fetched as
        needed. `limit` caps how many are yielded (all when None).
        """
        return self._client._pages(
            lambda cursor, size: E.operation_session_actions(operation_id, cursor, size),
            limit,
            page_size,
        )


class AsyncSessionActions:
    """`client.session_actions`: one attempt of one unit of work on one worker."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, session_action_id: str) -> models.SessionAction:
        """One session action: status, times, exit code, progress, definition."""
        return await self._client._send(E.get_session_action(session_action_id))

    def list(
        self,
        operation_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[models.SessionAction]:
        """Session actions of an operation, a session and/or a task, oldest first.

        As `Client.session_actions.list`, for ``async for``.

        Raises:
            ValidationError: no filter was given (raised here, before any request).
        """
        E.check_session_action_filters(operation_id, session_id, task_id)

        def page(cursor: str | None, size: int | None) -> Call[models.Page[models.SessionAction]]:
            return E.list_session_actions(
                operation_id=operation_id,
                session_id=session_id,
                task_id=task_id,
                cursor=cursor,
                limit=size,
            )

        return self._client._pages(page, limit, page_size)


class AsyncQueues:
    """`client.queues`: the lanes where work waits, their priority and concurrency limit."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[models.QueueStats]:
        """Every queue of the project, highest priority first, then by name."""
        return [queue async for queue in self._client._pages(E.list_queues, None, None)]

    async def configure(
        self, name: str, priority: int = 0, max_concurrency: int | None = None
    ) -> models.Queue:
        """Set a queue's priority and concurrency limit (both), creating it if new (admin)."""
        return await self._client._send(E.configure_queue(name, priority, max_concurrency))


class AsyncWorkers:
    """`client.workers`: the registered worker agents."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def list(self, *, limit: int | None = None) -> AsyncIterator[models.Worker]:
        """Workers, newest first, page after page."""
        return self._client._pages(E.list_workers, limit, None)

    async def get(self, worker_id: str) -> models.Worker:
        """One worker."""
        return await self._client._send(E.get_worker(worker_id))


class AsyncTokens:
    """`client.tokens`: API tokens of this project (needs an admin token)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, name: str, role: Role | str, expires_in: float | None = None
    ) -> TokenCreated:
        """A new token with `role`; its `secret` is shown only in this answer.

        With `expires_in` (seconds) the token answers 401 "expired" after that.
        """
        return await self._client._send(E.create_token(name, role, expires_in))

    def list(
        self, *, limit: int | None = None, page_size: int | None = None
    ) -> AsyncIterator[models.Token]:
        """The project's tokens, oldest first (never their secrets), page after page.

        Revoked tokens are included (with `revoked_at`); `limit` caps how many are
        yielded (all when None).
        """
        return self._client._pages(E.list_tokens, limit, page_size)

    async def rotate(self, token_id: str) -> TokenCreated:
        """A new secret: the token's successor (same name, role, expiry); the old is revoked."""
        return await self._client._send(E.rotate_token(token_id))

    async def revoke(self, token_id: str) -> models.Token:
        """Revoke a token; returns it with `revoked_at` set."""
        return await self._client._send(E.revoke_token(token_id))


class AsyncProjects:
    """`client.projects`: the tenancy boundary."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def current(self) -> models.Project:
        """The project of this client's token."""
        return await self._client._send(E.current_project())

    async def create(self, name: str) -> ProjectCreated:
        """A new project and the secret of its first admin token (needs an admin token)."""
        return await self._client._send(E.create_project(name))


class AsyncAudit:
    """`client.audit`: the audit log of security-relevant events (needs an admin token)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def list(
        self,
        *,
        kind: AuditKind | str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """Audit rows the token may read, newest first, page after page.

        An admin reads their project's rows; an admin of the server's first project
        also reads the server's own (`project_id` None: failed authentications whose
        token matches nothing). `kind` (e.g. ``"token.created"``) and `actor` (a token
        id) match exactly; `since` (inclusive) and `until` (exclusive) bound the time
        (a naive datetime is UTC); `limit` caps how many are yielded (all when None).

        Raises:
            ValidationError: `kind` is not a kind of audit row.
            AccessDenied: the token is not an admin's.
        """

        def page(cursor: str | None, size: int | None) -> Call[models.Page[AuditRecord]]:
            return E.list_audit(cursor, size, kind=kind, actor=actor, since=since, until=until)

        return self._client._pages(page, limit, page_size)
