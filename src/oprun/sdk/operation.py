"""`Operation`: an immutable snapshot of one operation, with the calls that follow it.

As Tamr's operations: a snapshot shows the operation as it was when fetched and
never changes. To see what happened since, use the snapshot that `poll()`,
`refresh()` or `wait()` returns::

    op = client.operations.invoke("resize", {"width": 640})
    op = op.wait(timeout=600)          # the resolved operation, or TimeoutError
    if op.succeeded():
        print(op.result)

`AsyncOperation` is the same for `AsyncClient`, with the same method names.
An invocation answered with 204 No Content (a cacheable action whose result is
up to date) gives a `NoOp` (`AsyncNoOp`): done, succeeded, nothing to wait for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

import httpx

from oprun.domain import models
from oprun.domain.status import OperationStatus
from oprun.sdk import _endpoints
from oprun.sdk._snapshot import NoOpSnapshot, OperationSnapshot, pick

if TYPE_CHECKING:
    from oprun.sdk.async_client import AsyncClient
    from oprun.sdk.client import Client

DEFAULT_RAISE_ON: tuple[str, ...] = ("FAILED",)


class Operation(OperationSnapshot):
    """One operation as it was when fetched; calls on it return new snapshots.

    Attributes are read-only (`id`, `status`, `state`, `kind`, `project_id`,
    `created_by`, `step_code`, `progress`, `result`, `error`, `history`,
    `provenance`, `parameters`, `done`, ...): assigning one raises AttributeError.
    """

    __slots__ = ("_client",)
    _client: Client

    def __init__(self, client: Client, model: models.Operation) -> None:
        super().__init__(model)
        object.__setattr__(self, "_client", client)

    @classmethod
    def from_response(cls, client: Client, response: httpx.Response) -> Operation | NoOp:
        """The snapshot an invocation's response describes: a `NoOp` for 204 No Content.

        Raises the `OprunError` subclass of an error response.
        """
        model = _endpoints.read_invocation(response)
        if model is None:
            return NoOp()
        return cls(client, model)

    def poll(self) -> Operation:
        """Fetch the operation again: a new snapshot (this one does not change)."""
        return self._client.operations.get(self.id)

    def refresh(self) -> Operation:
        """Same as `poll()`: returns the fresh snapshot and leaves this one as it was.

        (matrice's `refresh()` updates in place; a snapshot cannot, so use
        ``op = op.refresh()``.)
        """
        return self.poll()

    def wait(
        self,
        poll_interval: float | None = None,
        timeout: float | None = None,
        *,
        poll_interval_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> Operation:
        """Wait for the operation to end and return the resolved snapshot.

        Rides the server's long poll (``GET /v1/operations/{id}:wait``); with
        `poll_interval`, polls with plain GETs that many seconds apart instead.
        Rides out a server restart: see `Operations.watch`.

        Args:
            poll_interval: seconds between plain GETs; None uses the long poll.
            timeout: seconds to wait at most; None waits as long as it takes.
            poll_interval_seconds: Tamr's name for `poll_interval`.
            timeout_seconds: Tamr's name for `timeout`.

        Raises:
            TimeoutError: still not done after `timeout` seconds.
        """
        poll_interval = pick(
            "poll_interval", poll_interval, "poll_interval_seconds", poll_interval_seconds
        )
        timeout = pick("timeout", timeout, "timeout_seconds", timeout_seconds)
        if self.done:
            return self
        return self._client.operations.wait(self.id, timeout=timeout, poll_interval=poll_interval)

    def wait_until_done(
        self,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> Operation:
        """Wait as `wait()` does; raise `OperationFailed` if it ends in a `raise_on` status.

        `raise_exception_if` is Datature's name for `raise_on`.

        Raises:
            OperationFailed: the resolved status is in `raise_on` (FAILED by default).
            TimeoutError: still not done after `timeout` seconds.
        """
        return self._client.operations.wait_until_done(
            self.id, timeout=timeout, raise_on=raise_on, raise_exception_if=raise_exception_if
        )

    def cancel(self) -> Operation:
        """Ask the server to cancel; returns the snapshot it answers with."""
        return self._client.operations.cancel(self.id)

    def retry(self) -> Operation:
        """Start a new operation with the same action version and parameters."""
        return self._client.operations.retry(self.id)

    def delete(self) -> None:
        """Delete the (finished) operation and its records; `Conflict` while it runs."""
        self._client.operations.delete(self.id)

    def logs(self, follow: bool = False) -> Iterator[models.LogRecord]:
        """Its log records in order; with `follow`, keep reading until it ends."""
        return self._client.operations.logs(self.id, follow=follow)

    def tasks(self) -> Iterator[models.Task]:
        """Its tasks, oldest first; pages are fetched as you iterate."""
        return self._client.operations.tasks(self.id)

    def session_actions(self) -> Iterator[models.SessionAction]:
        """Every attempt at its work (Deadline's session actions), oldest first, paged."""
        return self._client.operations.session_actions(self.id)


class AsyncOperation(OperationSnapshot):
    """`Operation` for `AsyncClient`: the same snapshot, with awaitable calls."""

    __slots__ = ("_client",)
    _client: AsyncClient

    def __init__(self, client: AsyncClient, model: models.Operation) -> None:
        super().__init__(model)
        object.__setattr__(self, "_client", client)

    @classmethod
    def from_response(
        cls, client: AsyncClient, response: httpx.Response
    ) -> AsyncOperation | AsyncNoOp:
        """The snapshot an invocation's response describes: an `AsyncNoOp` for 204."""
        model = _endpoints.read_invocation(response)
        if model is None:
            return AsyncNoOp()
        return cls(client, model)

    async def poll(self) -> AsyncOperation:
        """Fetch the operation again: a new snapshot (this one does not change)."""
        return await self._client.operations.get(self.id)

    async def refresh(self) -> AsyncOperation:
        """Same as `poll()`: returns the fresh snapshot and leaves this one as it was."""
        return await self.poll()

    async def wait(
        self,
        poll_interval: float | None = None,
        timeout: float | None = None,
        *,
        poll_interval_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncOperation:
        """Wait for the operation to end and return the resolved snapshot.

        See `Operation.wait` for the arguments.

        Raises:
            TimeoutError: still not done after `timeout` seconds.
        """
        poll_interval = pick(
            "poll_interval", poll_interval, "poll_interval_seconds", poll_interval_seconds
        )
        timeout = pick("timeout", timeout, "timeout_seconds", timeout_seconds)
        if self.done:
            return self
        return await self._client.operations.wait(
            self.id, timeout=timeout, poll_interval=poll_interval
        )

    async def wait_until_done(
        self,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> AsyncOperation:
        """Wait; raise `OperationFailed` if it ends in a `raise_on` status."""
        return await self._client.operations.wait_until_done(
            self.id, timeout=timeout, raise_on=raise_on, raise_exception_if=raise_exception_if
        )

    async def cancel(self) -> AsyncOperation:
        """Ask the server to cancel; returns the snapshot it answers with."""
        return await self._client.operations.cancel(self.id)

    async def retry(self) -> AsyncOperation:
        """Start a new operation with the same action version and parameters."""
        return await self._client.operations.retry(self.id)

    async def delete(self) -> None:
        """Delete the (finished) operation and its records; `Conflict` while it runs."""
        await self._client.operations.delete(self.id)

    def logs(self, follow: bool = False) -> AsyncIterator[models.LogRecord]:
        """Its log records in order (``async for``); with `follow`, until it ends."""
        return self._client.operations.logs(self.id, follow=follow)

    def tasks(self) -> AsyncIterator[models.Task]:
        """Its tasks, oldest first (``async for``); pages are fetched as needed."""
        return self._client.operations.tasks(self.id)

    def session_actions(self) -> AsyncIterator[models.SessionAction]:
        """Every attempt at its work (Deadline's session actions), oldest first (``async for``)."""
        return self._client.operations.session_actions(self.id)


class NoOp(NoOpSnapshot):
    """An invocation that had nothing to do (HTTP 204): already done and succeeded.

    `poll()`, `refresh()`, `wait()` and `wait_until_done()` return the no-op itself.
    """

    __slots__ = ()

    def poll(self) -> NoOp:
        """The no-op itself: there is nothing on the server to fetch."""
        return self

    def refresh(self) -> NoOp:
        """The no-op itself."""
        return self

    def wait(
        self,
        poll_interval: float | None = None,
        timeout: float | None = None,
        *,
        poll_interval_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> NoOp:
        """The no-op itself: it is already done."""
        return self

    def wait_until_done(
        self,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> NoOp:
        """The no-op itself: it succeeded."""
        return self


class AsyncNoOp(NoOpSnapshot):
    """`NoOp` for `AsyncClient`: the same, with awaitable calls."""

    __slots__ = ()

    async def poll(self) -> AsyncNoOp:
        """The no-op itself: there is nothing on the server to fetch."""
        return self

    async def refresh(self) -> AsyncNoOp:
        """The no-op itself."""
        return self

    async def wait(
        self,
        poll_interval: float | None = None,
        timeout: float | None = None,
        *,
        poll_interval_seconds: float | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncNoOp:
        """The no-op itself: it is already done."""
        return self

    async def wait_until_done(
        self,
        timeout: float | None = None,
        raise_on: Iterable[OperationStatus | str] = DEFAULT_RAISE_ON,
        *,
        raise_exception_if: str | Iterable[str] | None = None,
    ) -> AsyncNoOp:
        """The no-op itself: it succeeded."""
        return self
