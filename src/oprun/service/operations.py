"""Use cases on operations: invoke, read, wait, cancel, retry, delete, logs."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from anyio.to_thread import run_sync as run_in_threadpool

from oprun.domain.errors import Conflict, ValidationError
from oprun.domain.limits import MAX_WAIT_SECONDS
from oprun.domain.models import (
    Action,
    ActionKind,
    Invocation,
    InvocationSource,
    LogRecord,
    Operation,
    Page,
    SessionAction,
    Task,
)
from oprun.domain.params import validate_parameters
from oprun.domain.plan import StepPlan
from oprun.domain.roles import Permission
from oprun.domain.status import OperationStatus
from oprun.service import cursor
from oprun.service.action_cache import ActionCache
from oprun.service.auth import Principal
from oprun.service.metrics import Metrics
from oprun.store import NewOperation, Store
from oprun.store.invocations import CheckedOperation, StaleAction
from oprun.store.notify import ended_key, logs_key, operation_key


def params_digest(parameters: dict[str, object]) -> str:
    """Digest of a parameter set, for cacheable actions."""
    if not parameters:
        return EMPTY_DIGEST
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


STALE_RETRIES = 5
"""Times an invocation is resolved again when the action's latest version moved on."""

EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"{}").hexdigest()
"""`params_digest({})`: an action without parameters needs no hashing per operation."""

SESSION_ACTION_FILTERS = ("operation_id", "session_id", "task_id")
"""What session actions can be listed by (`OperationService.session_action_page`)."""


class OperationService:
    """Everything a client does with operations."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._actions = ActionCache(store)

    def _create(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        """Write `items` (see `Store.create_operations`), counting the operations created."""
        results = self._store.create_operations(items)
        created: dict[tuple[str, str], int] = {}
        for operation, new in results:
            if new:
                where = (operation.project_id, operation.queue)
                created[where] = created.get(where, 0) + 1
        for (project_id, queue), count in created.items():
            self._metrics.operations_created.labels(project_id, queue).inc(count)
        return results

    # -- invoke --------------------------------------------------------------------------
    def _prepare(
        self,
        principal: Principal,
        invocation: Invocation,
        source: InvocationSource = InvocationSource.MANUAL,
        source_id: str | None = None,
        actions: dict[tuple[str, int | None], Action] | None = None,
        *,
        fresh: bool = False,
    ) -> NewOperation:
        """Resolve and validate one invocation; `actions` memoizes lookups within a request.

        The version comes from this process's cache unless `fresh`; an operation of the
        latest version is written only if it still is the latest (`CheckedOperation`).
        """
        key = (invocation.action, invocation.version)
        action = actions.get(key) if actions is not None else None
        if action is None:
            action = self._actions.get(
                principal.project_id, invocation.action, invocation.version, fresh=fresh
            )
            if actions is not None:
                actions[key] = action
        if invocation.action_digest is not None and invocation.action_digest != action.digest:
            raise Conflict(
                f"action {action.name!r} version {action.version} has digest {action.digest}, "
                f"not {invocation.action_digest}",
                action=action.name,
                version=action.version,
                digest=action.digest,
                expected=invocation.action_digest,
            )
        parameters = validate_parameters(action.definition.parameters, invocation.parameters)
        plan: list[StepPlan] = []
        if action.definition.kind is ActionKind.OPENJD:
            from oprun.openjd.plan import plan_job  # openjd-model: 0.2 s, only when needed

            template = action.definition.template
            assert isinstance(template, dict)  # saved definitions hold the parsed template
            plan = plan_job(template, parameters)
        return CheckedOperation(
            project_id=principal.project_id,
            action=action,
            queue=invocation.queue or action.definition.queue,
            parameters=parameters,
            params_digest=params_digest(parameters),
            created_by=principal.name,
            source_type=source,
            source_id=source_id or principal.token_id,
            idempotency_key=invocation.idempotency_key,
            timeout=invocation.timeout,
            plan=plan,
            latest=invocation.version is None,
        )

    def invoke(self, principal: Principal, invocation: Invocation) -> tuple[Operation | None, bool]:
        """Create an operation.

        Returns (operation, created). The operation is None when the action is
        cacheable and an identical invocation already succeeded (nothing to do).
        """
        principal.require(Permission.INVOKE)
        return self._invoke_many(principal, [invocation])[0]

    def invoke_many(
        self, principal: Principal, invocations: Sequence[Invocation]
    ) -> list[Operation | None]:
        """Create many operations in one transaction (all or none)."""
        principal.require(Permission.INVOKE)
        return [op for op, _ in self._invoke_many(principal, invocations)]

    def _invoke_many(
        self,
        principal: Principal,
        invocations: Sequence[Invocation],
        source: InvocationSource = InvocationSource.MANUAL,
        source_id: str | None = None,
        *,
        reuse: bool = True,
    ) -> list[tuple[Operation | None, bool]]:
        """Resolve, validate and write; `reuse`: a cacheable action's success answers None.

        An action whose latest version moved on since this process last read it is
        resolved again (fresh from the store), and the whole request with it.
        """
        fresh = False
        for _ in range(STALE_RETRIES):
            try:
                return self._try_invoke(principal, invocations, source, source_id, reuse, fresh)
            except StaleAction as exc:
                for project_id, name in exc.names:
                    self._actions.forget_latest(project_id, name)
                fresh = True
        names = sorted({invocation.action for invocation in invocations})
        raise Conflict(
            f"new versions of {', '.join(names)} kept being saved during the invocation; retry",
            actions=names,
        )

    def _try_invoke(
        self,
        principal: Principal,
        invocations: Sequence[Invocation],
        source: InvocationSource,
        source_id: str | None,
        reuse: bool,
        fresh: bool,
    ) -> list[tuple[Operation | None, bool]]:
        prepared: list[NewOperation | None] = []
        actions: dict[tuple[str, int | None], Action] = {}  # a bulk request names few actions
        for index, invocation in enumerate(invocations):
            try:
                item = self._prepare(
                    principal, invocation, source, source_id, actions=actions, fresh=fresh
                )
            except ValidationError as exc:
                if len(invocations) > 1:
                    exc.details["index"] = index
                raise
            cached = (
                reuse
                and item.action.definition.cacheable
                and self._store.find_cached_success(item.action.version_id, item.params_digest)
            )
            # A seen idempotency key answers its operation even when the cache would hit.
            seen = (
                cached
                and item.idempotency_key
                and self._store.find_by_idempotency_key(principal.project_id, item.idempotency_key)
            )
            prepared.append(None if cached and not seen else item)
        created = iter(self._create([p for p in prepared if p is not None]))
        return [(None, False) if p is None else next(created) for p in prepared]

    def retry(self, principal: Principal, operation_id: str) -> Operation:
        """A new operation running the same action version with the same parameters."""
        principal.require(Permission.INVOKE)
        old = self._store.get_operation(principal.project_id, operation_id)
        invocation = Invocation(
            action=old.kind,
            version=old.action_version,
            parameters=old.parameters,
            timeout=old.timeout,
            queue=old.queue,
        )
        ((op, _),) = self._invoke_many(
            principal, [invocation], InvocationSource.RETRY, old.id, reuse=False
        )
        assert op is not None  # reuse=False: never answered by a cached success
        return op

    # -- read ----------------------------------------------------------------------------
    def get(self, principal: Principal, operation_id: str) -> Operation:
        """One operation with its history."""
        principal.require(Permission.READ)
        return self._store.get_operation(principal.project_id, operation_id)

    def page(
        self,
        principal: Principal,
        *,
        status: OperationStatus | None = None,
        action: str | None = None,
        created_by: str | None = None,
        page_cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Operation]:
        """A page of operations, newest first."""
        principal.require(Permission.READ)

        def fetch(before: Any, size: int) -> list[Operation]:
            return self._store.list_operations(
                principal.project_id,
                status=status,
                action=action,
                created_by=created_by,
                before=before,
                limit=size,
            )

        return cursor.paged(page_cursor, limit, fetch, key=lambda op: op.id)

    def tasks(
        self,
        principal: Principal,
        operation_id: str,
        page_cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Task]:
        """A page of the operation's tasks, oldest first; NotFound for another project's."""
        principal.require(Permission.READ)

        def fetch(after: Any, size: int) -> list[Task]:
            return self._store.list_tasks(
                principal.project_id, operation_id, after=after, limit=size
            )

        return cursor.paged(page_cursor, limit, fetch, key=lambda task: task.id)

    def session_actions(
        self,
        principal: Principal,
        operation_id: str,
        page_cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[SessionAction]:
        """A page of the attempts at the operation's work, oldest first (each session in order).

        NotFound for another project's operation.
        """
        principal.require(Permission.READ)

        def fetch(after: Any, size: int) -> list[SessionAction]:
            return self._store.list_session_actions(
                principal.project_id, operation_id, after=after, limit=size
            )

        return cursor.paged(page_cursor, limit, fetch, key=lambda sa: sa.id)

    def session_action_page(
        self,
        principal: Principal,
        *,
        operation_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        page_cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[SessionAction]:
        """A page of the project's session actions of an operation, a session and/or a task.

        Oldest first, so each session reads in the order it ran. At least one filter
        is required (a project-wide list would have no index to page along); an id
        of another project matches nothing.
        """
        principal.require(Permission.READ)
        operation_id, session_id, task_id = (
            (value or "").strip() or None for value in (operation_id, session_id, task_id)
        )
        if operation_id is None and session_id is None and task_id is None:
            raise ValidationError(
                "filter by at least one of " + ", ".join(SESSION_ACTION_FILTERS),
                fields=list(SESSION_ACTION_FILTERS),
            )

        def fetch(after: Any, size: int) -> list[SessionAction]:
            return self._store.find_session_actions(
                principal.project_id,
                operation_id=operation_id,
                session_id=session_id,
                task_id=task_id,
                after=after,
                limit=size,
            )

        return cursor.paged(page_cursor, limit, fetch, key=lambda sa: sa.id)

    def session_action(self, principal: Principal, session_action_id: str) -> SessionAction:
        """One session action."""
        principal.require(Permission.READ)
        return self._store.get_session_action(principal.project_id, session_action_id)

    async def wait(
        self,
        principal: Principal,
        operation_id: str,
        timeout: float,
        hangup: asyncio.Event | None = None,
    ) -> Operation:
        """The operation once done, or as it is after `timeout` seconds (long poll).

        Answers early when `hangup` is set (the caller left) or the server is stopping.
        """
        principal.require(Permission.READ)
        if not 0 <= timeout <= MAX_WAIT_SECONDS:
            raise ValidationError(
                f"timeout must be between 0 and {MAX_WAIT_SECONDS:g} seconds", field="timeout"
            )
        project = principal.project_id

        async def fetch() -> Operation:
            return await run_in_threadpool(self._store.get_operation, project, operation_id)

        # Woken only when it ends: a change on the way (claimed, running) costs no read.
        return await self._store.notifier.long_poll(
            [ended_key(operation_id)],
            timeout,
            hangup,
            fetch,
            lambda op: op.status.is_terminal(),
        )

    # -- change --------------------------------------------------------------------------
    def cancel(self, principal: Principal, operation_id: str) -> Operation:
        """Request cancellation; answers the operation as it now is."""
        principal.require(Permission.INVOKE)
        self._store.cancel_operation(
            principal.project_id, operation_id, f"cancel requested by {principal.name}"
        )
        return self._store.get_operation(principal.project_id, operation_id)

    def delete(self, principal: Principal, operation_id: str) -> None:
        """Delete a finished operation."""
        principal.require(Permission.INVOKE)
        self._store.delete_operation(principal.project_id, operation_id)

    # -- logs ----------------------------------------------------------------------------
    async def logs(
        self,
        principal: Principal,
        operation_id: str,
        after: int,
        limit: int | None,
        wait: float,
        hangup: asyncio.Event | None = None,
    ) -> Page[LogRecord]:
        """Log records after `after`; with `wait`, long-polls until lines arrive or it ends."""
        principal.require(Permission.READ)
        size = cursor.page_size(limit)
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise ValidationError(
                f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds", field="wait"
            )
        project = principal.project_id

        async def fetch() -> tuple[list[LogRecord], bool]:
            records = await run_in_threadpool(
                self._store.list_logs, project, operation_id, after, size
            )
            if records:
                return records, False
            op = await run_in_threadpool(self._store.get_operation, project, operation_id)
            if not op.status.is_terminal():
                return records, False
            # Lines written with the final report are already visible: look once more.
            records = await run_in_threadpool(
                self._store.list_logs, project, operation_id, after, size
            )
            return records, True

        records, _ = await self._store.notifier.long_poll(
            [logs_key(operation_id), operation_key(operation_id)],
            wait,
            hangup,
            fetch,
            lambda got: bool(got[0]) or got[1],
        )
        nxt = str(records[-1].seq) if records else str(after)
        return Page[LogRecord](items=records, next_cursor=nxt)
