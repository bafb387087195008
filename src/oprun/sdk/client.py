"""`Client`: the synchronous SDK. `AsyncClient` (async_client.py) has the same methods.

Example::

with oprun.Client() as client:          # OPRUN_URL / OPRUN_TOKEN
    op = client.operations.invoke("resize", {"width": 640})
    op = op.wait_until_done(timeout=600)
    print(op.result)
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload

import httpx

from oprun.domain import models
from oprun.domain.audit import AuditKind, AuditRecord
from oprun.domain.limits import MAX_PAGE_SIZE
from oprun.domain.roles import Role
from oprun.domain.status import OperationStatus
from oprun.sdk import _endpoints as E
from oprun.sdk._endpoints import ActionRef, ProjectCreated, TokenCreated
from oprun.sdk._failover import Endpoint, Endpoints, proxied, resolve
from oprun.sdk._requests import Call, ConnectionSettings, finish
from oprun.sdk._retry import OUTAGE_PATIENCE, Attempts, HttpRetry, http_retry
from oprun.sdk._snapshot import statuses
from oprun.sdk._templates import TemplateSource, read_template
from oprun.sdk.errors import OperationFailed
from oprun.sdk.events import Events
from oprun.sdk.operation import DEFAULT_RAISE_ON, NoOp, Operation

T = TypeVar("T")

LONG_POLL_SECONDS = 30.0
"""Longest single server-side wait `wait()` asks for; it asks again until done."""
LOG_FOLLOW_SECONDS = 20.0
"""Longest single server-side wait for new log lines."""


class DefinesActions(Protocol):
    """Anything that lists action definitions, such as an `oprun.App`."""

    def definitions(self) -> Iterable[models.ActionDefinition]:
        """The definitions of the actions it serves."""
        ...


class Client:
    """A connection to an oprun server.

    Args:
        url: the server, e.g. ``https://oprun.example.com``; or several API processes
            of one deployment, as a list or comma-separated, to spread calls over and
            to fail over between (a DNS name with several addresses counts as one URL
            per address). Default ``OPRUN_URL``, else the profile's, else
            ``http://127.0.0.1:8710``.
        token: an API token; default ``OPRUN_TOKEN``, else the profile's.
        timeout: seconds to connect, send or read (long polls add their wait).
        retries: how often a call that is safe to repeat is retried after a connection
            failure, a 429 or a 503 (exponential backoff with jitter; `Retry-After` is
            honoured). By default such a call is retried for up to 30 seconds
            (`HttpRetry.budget`), long enough to ride out an API restart. Reads,
            deletes and invocations (which always carry an idempotency key) are safe
            to repeat; other writes are never retried once they may have reached the
            server. `wait()` and `events` keep retrying until their deadline instead.
        retry: the whole HTTP retry policy (`HttpRetry`: budget or count, backoff,
            longest `Retry-After` waited for); `retries`, when given, replaces its
            count.
        profile: a profile of ``~/.config/oprun/config.toml`` (written by
            ``oprun login``) to take the url and token from; it ranks above the
            environment. Without it, ``OPRUN_PROFILE`` (else ``[default]``) is used
            after ``OPRUN_URL`` / ``OPRUN_TOKEN``.
        transport: an httpx transport to send requests through (tests, proxies).

    Every method raises the `oprun.OprunError` subclass of the server's answer
    (`NotFound`, `ValidationError`, ...), and `Unavailable` when the server cannot be
    reached. Resources: `actions`, `operations`, `session_actions`, `queues`,
    `workers`, `tokens`, `projects`, `events`.

    Raises:
        ValidationError: the URL is not http(s), or a named profile does not exist.
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = ConnectionSettings.resolve(url, token, timeout, profile)
        self._retry = http_retry(retry, retries)
        self._sleep: Callable[[float], None] = time.sleep
        self._endpoints = Endpoints(self._settings.urls, lookup=transport is None and not proxied())
        self._http = httpx.Client(
            headers=self._settings.headers(),
            timeout=self._settings.timeout,
            transport=transport,
        )
        self.actions = Actions(self)
        self.operations = Operations(self)
        self.session_actions = SessionActions(self)
        self.queues = Queues(self)
        self.workers = Workers(self)
        self.tokens = Tokens(self)
        self.events = Events(self)
        self.projects = Projects(self)
        self.audit = Audit(self)

    @property
    def url(self) -> str:
        """The server this client talks to; several URLs are comma-separated."""
        return self._settings.url

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def health(self) -> dict[str, Any]:
        """The server's liveness answer (``{"status": "ok", ...}``); needs no token."""
        return self._send(E.health())

    def close(self) -> None:
        """Close the connections this client holds."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------
    def _send(self, call: Call[T], *, until: float | None = None) -> T:
        """Send a call, retrying it when that is safe, and return its parsed answer.

        With `until` (a `time.monotonic()` deadline), a failed call that is safe to
        repeat is retried for as long as the deadline allows, not `retries` times.
        """
        attempts = Attempts(self._retry, call, self._endpoints, until=until)
        while True:
            endpoint = self._endpoint()
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(
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
                self._sleep(delay)

    def _endpoint(self) -> Endpoint:
        """The endpoint of the next request, once any DNS name due a lookup is looked up."""
        for url, host, port in self._endpoints.lookups_due():
            self._endpoints.resolved(url, resolve(host, port))
        return self._endpoints.pick()

    def _pages(
        self,
        make: Callable[[str | None, int | None], Call[models.Page[T]]],
        limit: int | None,
        page_size: int | None,
    ) -> Iterator[T]:
        """Every item of a paged list, fetching pages as they are needed."""
        size = E.page_size(limit, page_size)
        cursor: str | None = None
        count = 0
        while limit is None or count < limit:
            page = self._send(make(cursor, size))
            for item in page.items:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor


class Actions:
    """`client.actions`: named, versioned action definitions."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def register(self, definition_or_app: models.ActionDefinition) -> models.Action: ...
    @overload
    def register(self, definition_or_app: DefinesActions) -> builtins.list[models.Action]: ...
    def register(
        self, definition_or_app: models.ActionDefinition | DefinesActions
    ) -> models.Action | builtins.list[models.Action]:
        """Save an action definition as a new version (or find the identical one).

        Given an object with ``definitions()`` (an `oprun.App`), saves each of its
        actions and returns the saved versions in order.
        """
        if isinstance(definition_or_app, models.ActionDefinition):
            return self._client._send(E.save_action(definition_or_app))
        return [self._client._send(E.save_action(d)) for d in definition_or_app.definitions()]

    def register_template(
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

        Its parameters are the template's ``parameterDefinitions``: invoke it with the
        job parameters as usual (``operations.invoke(name, {"Frames": "1-100"})``).

        Args:
            name: the action's name.
            template: a path to a YAML or JSON template file (``.json`` is read as
                JSON, anything else as YAML); a path to a Deadline Cloud job bundle
                directory, whose ``template.yaml`` or ``template.json`` is read and
                whose relative PATH parameter defaults are made absolute by joining
                them to the bundle directory, as ``deadline bundle submit`` does (its
                ``parameter_values`` file is not read: pass those values when
                invoking); or a template already parsed into a mapping.
            queue: the queue its work waits in (default ``default``).
            timeout: seconds each attempt may run.
            max_attempts: attempts per task, interruptions included (default 3).
            retry: which failures run again and after how long (`RetryPolicy`).
            requirements: what a worker must have (`Requirements`).
            quarantine_after: failures in a row on one worker before it takes no
                more of an operation's tasks (0: never).
            cacheable: whether an identical invocation that already succeeded
                answers a `NoOp`.
            description: shown with the action.

        Options left as None keep the definition's defaults.

        Raises:
            ValidationError: nothing readable is at the path, the directory is not a
                job bundle, the file is not a YAML/JSON mapping, or the server found
                the template invalid (its message quotes openjd-model's).
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
        return self._client._send(E.save_action(definition))

    def get(self, name: str, version: int | None = None) -> models.Action:
        """An action's latest version, or the given `version`."""
        return self._client._send(E.get_action(name, version))

    def list(self, *, limit: int | None = None) -> Iterator[models.Action]:
        """The latest version of every action, page after page (at most `limit`)."""
        return self._client._pages(E.list_actions, limit, None)

    def versions(self, name: str, *, limit: int | None = None) -> Iterator[models.Action]:
        """Every version of an action, newest first."""
        return self._client._pages(
            lambda cursor, size: E.action_versions(name, cursor, size), limit, None
        )


class Operations:
    """`client.operations`: invoke actions and follow what they do."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _snapshot(self, model: models.Operation) -> Operation:
        return Operation(self._client, model)

    def invoke(
        self,
        action: ActionRef,
        parameters: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        action_digest: str | None = None,
    ) -> Operation | NoOp:
        """Invoke an action; returns its operation, or a `NoOp` when nothing needs doing.

        Args:
            action: the action's name (or an `Action` / `ActionDefinition`).
            parameters: values by parameter name; the server checks and coerces them.
            version: the action version to run; the latest when None.
            idempotency_key: invoking again with the same key returns the same
                operation. One is generated when None, so a retried request never
                starts a second operation.
            timeout: seconds the whole operation may take.
            queue: the queue to run on, instead of the action's.
            action_digest: run only if the version invoked has this digest (`Action.digest`);
                `Conflict` naming both digests when the action changed.
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
        model = self._client._send(E.invoke(body))
        return NoOp(body.action) if model is None else self._snapshot(model)

    def invoke_many(
        self, invocations: Iterable[models.Invocation | Mapping[str, Any]]
    ) -> list[Operation | NoOp]:
        """Invoke up to 1,000 actions in one request; one answer per invocation, in order.

        Each invocation is an `oprun.domain.models.Invocation` or a mapping with its
        fields (``{"action": "resize", "parameters": {...}}``).
        """
        bodies = [E.as_invocation(i) for i in invocations]
        models_ = self._client._send(E.invoke_many(bodies))
        return [
            NoOp(b.action) if m is None else self._snapshot(m)
            for b, m in zip(bodies, models_, strict=False)
        ]

    def get(self, operation_id: str) -> Operation:
        """One operation, as it is now."""
        return self._snapshot(self._client._send(E.get_operation(operation_id)))

    def list(
        self,
        status: OperationStatus | str | None = None,
        action: str | None = None,
        created_by: str | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
    ) -> Iterator[Operation]:
        """Operations, newest first, filtered; pages are fetched as you iterate.

        `limit` caps how many are yielded (all when None).
        """

        def page(cursor: str | None, size: int | None) -> Call[models.Page[models.Operation]]:
            return E.list_operations(
                status=status, action=action, created_by=created_by, cursor=cursor, limit=size
            )

        return (self._snapshot(m) for m in self._client._pages(page, limit, page_size))

    def cancel(self, operation_id: str) -> Operation:
        """Request cancellation; returns the operation as the server now has it."""
        return self._snapshot(self._client._send(E.cancel_operation(operation_id)))

    def retry(self, operation_id: str) -> Operation:
        """A new operation with the same action version and parameters."""
        return self._snapshot(self._client._send(E.retry_operation(operation_id)))

    def delete(self, operation_id: str) -> None:
        """Delete a finished operation; `Conflict` while it runs."""
        self._client._send(E.delete_operation(operation_id))

    def watch(
        self,
        operation_id: str,
        *,
        every: float = 1.0,
        timeout: float | None = None,
        poll_interval: float | None = None,
    ) -> Iterator[Operation]:
        """Snapshots of an operation until it ends (the last one yielded is done).

        Each comes from a server long poll of up to `every` seconds, which answers at
        once when the operation ends; with `poll_interval`, plain GETs that many
        seconds apart are used instead.

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
            model = self._client._send(call, until=until)
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
                self._client._sleep(poll_interval if left is None else min(poll_interval, left))

    def wait(
        self, operation_id: str, timeout: float | None = None, *, poll_interval: float | None = None
    ) -> Operation:
        """Wait until the operation ends; returns the resolved snapshot.

        Rides the server's long poll, asking for at most 30 seconds at a time; with
        `poll_interval`, polls with plain GETs instead.

        Raises:
            TimeoutError: still not done after `timeout` seconds.
        """
        last: Operation | None = None
        for snapshot in self.watch(
            operation_id, every=LONG_POLL_SECONDS, timeout=timeout, poll_interval=poll_interval
        ):
            last = snapshot
        assert last is not None
        return last

    def wait_until_done(
        self,
        operation_id: str,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> Operation:
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
        op = self.wait(operation_id, timeout)
        if op.status in bad:
            raise OperationFailed(op)
        return op

    def logs(
        self, operation_id: str, *, follow: bool = False, after: int = 0
    ) -> Iterator[models.LogRecord]:
        """Its log records after sequence number `after`, in order.

        With `follow`, long-polls for new lines and stops once the operation has
        ended and every line has been read.
        """
        send = self._client._send
        seq = after
        while True:
            wait = LOG_FOLLOW_SECONDS if follow else 0.0
            page = send(E.operation_logs(operation_id, after=seq, limit=MAX_PAGE_SIZE, wait=wait))
            for record in page.items:
                seq = max(seq, record.seq)
                yield record
            if page.items and (follow or len(page.items) >= MAX_PAGE_SIZE):
                continue
            if not follow:
                return
            if send(E.get_operation(operation_id)).status.is_terminal():
                yield from self.logs(operation_id, after=seq)
                return

    def tasks(
        self, operation_id: str, *, limit: int | None = None, page_size: int | None = None
    ) -> Iterator[models.Task]:
        """The operation's tasks, oldest first; pages are fetched as you iterate.

        `limit` caps how many are yielded (all when None).
        """
        return self._client._pages(
            lambda cursor, size: E.operation_tasks(operation_id, cursor, size), limit, page_size
        )

    def session_actions(
        self, operation_id: str, *, limit: int | None = None, page_size: int | None = None
    ) -> Iterator[models.SessionAction]:
        """Every attempt at the operation's work, on whichever worker, oldest first.

        Each session's attempts come in the order they ran; pages are fetched as you
        iterate. `limit` caps how many are yielded (all when None).
        """
        return self._client._pages(
            lambda cursor, size: E.operation_session_actions(operation_id, cursor, size),
            limit,
            page_size,
        )


class SessionActions:
    """`client.session_actions`: one attempt of one unit of work on one worker."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, session_action_id: str) -> models.SessionAction:
        """One session action: status, times, exit code, progress, definition."""
        return self._client._send(E.get_session_action(session_action_id))

    def list(
        self,
        operation_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
    ) -> Iterator[models.SessionAction]:
        """Session actions of an operation, a session and/or a task, oldest first.

        Filters combine (an operation's actions for one task); ids sort by creation,
        so each session reads in the order it ran: ``envEnter``, ``taskRun`` ...,
        ``envExit``. Pages are fetched as you iterate; `limit` caps how many are
        yielded (all when None). Records come without their status history
        (`get()` has it). Another project's ids match nothing.

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


class Queues:
    """`client.queues`: the lanes where work waits, their priority and concurrency limit."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> builtins.list[models.QueueStats]:
        """Every queue of the project, highest priority first, then by name.

        Each with its settings, the tasks waiting (`depth`) and running, and the
        last hour's throughput.
        """
        return builtins.list(self._client._pages(E.list_queues, None, None))

    def configure(
        self, name: str, priority: int = 0, max_concurrency: int | None = None
    ) -> models.Queue:
        """Set a queue's priority and concurrency limit, creating the queue if new (admin).

        Both settings are set: a setting left out takes its default, not its
        current value.

        Args:
            name: the queue.
            priority: higher-priority queues are served first (-1000..1000).
            max_concurrency: most of its tasks running at once; None: no limit.

        Raises:
            ValidationError: a setting is out of range or the name is not valid.
            AccessDenied: the token is not an admin's.
        """
        return self._client._send(E.configure_queue(name, priority, max_concurrency))


class Workers:
    """`client.workers`: the registered worker agents."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, limit: int | None = None) -> Iterator[models.Worker]:
        """Workers, newest first, page after page."""
        return self._client._pages(E.list_workers, limit, None)

    def get(self, worker_id: str) -> models.Worker:
        """One worker."""
        return self._client._send(E.get_worker(worker_id))


class Tokens:
    """`client.tokens`: API tokens of this project (needs an admin token)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, role: Role | str, expires_in: float | None = None) -> TokenCreated:
        """A new token with `role`; its `secret` is shown only in this answer.

        With `expires_in` (seconds) the token answers 401 "expired" after that.
        """
        return self._client._send(E.create_token(name, role, expires_in))

    def list(
        self, *, limit: int | None = None, page_size: int | None = None
    ) -> Iterator[models.Token]:
        """The project's tokens, oldest first (never their secrets), page after page.

        Revoked tokens are included (with `revoked_at`); `limit` caps how many are
        yielded (all when None).
        """
        return self._client._pages(E.list_tokens, limit, page_size)

    def rotate(self, token_id: str) -> TokenCreated:
        """A new secret: the token's successor (same name, role, expiry); the old is revoked."""
        return self._client._send(E.rotate_token(token_id))

    def revoke(self, token_id: str) -> models.Token:
        """Revoke a token; returns it with `revoked_at` set."""
        return self._client._send(E.revoke_token(token_id))


class Projects:
    """`client.projects`: the tenancy boundary."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def current(self) -> models.Project:
        """The project of this client's token."""
        return self._client._send(E.current_project())

    def create(self, name: str) -> ProjectCreated:
        """A new project and the secret of its first admin token (needs an admin token)."""
        return self._client._send(E.create_project(name))


class Audit:
    """`client.audit`: the audit log of security-relevant events (needs an admin token)."""

    def __init__(self, client: Client) -> None:
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
    ) -> Iterator[AuditRecord]:
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
