"""One builder per REST endpoint (see docs/api.md): each returns the `Call` to send.

Builders validate what they can before anything is sent (a bad invocation fails
here, with oprun's `ValidationError`), and pair each request with the parser of
its answer. Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import pydantic

from oprun.domain import models
from oprun.domain.errors import ValidationError
from oprun.domain.limits import MAX_PAGE_SIZE
from oprun.domain.roles import Role
from oprun.domain.status import OperationStatus
from oprun.sdk._requests import Call, from_pydantic, handle, segment

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")


TokenCreated = models.TokenCreated
ProjectCreated = models.ProjectCreated


ActionRef = str | models.Action | models.ActionDefinition
"""An action named by its name, or given as a saved action or a definition."""


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def _typed(tp: type[T]) -> Callable[[httpx.Response], T]:
    adapter: pydantic.TypeAdapter[T] = pydantic.TypeAdapter(tp)

    def parse(response: httpx.Response) -> T:
        return adapter.validate_json(response.content)

    return parse


def _nothing(_: httpx.Response) -> None:
    return None


def _maybe_operation(response: httpx.Response) -> models.Operation | None:
    if response.status_code == 204:
        return None
    return models.Operation.model_validate_json(response.content)


def read_invocation(response: httpx.Response) -> models.Operation | None:
    """An invocation's answer: its operation, or None for 204; raises an error response's error."""
    return handle(Call("POST", "/v1/operations", _maybe_operation), response)


def _bulk(response: httpx.Response) -> list[models.Operation | None]:
    return models.BulkInvocationResult.model_validate_json(response.content).operations


_PARSE_OPERATION = _model(models.Operation)
_PARSE_ACTION = _model(models.Action)
_PARSE_WORKER = _model(models.Worker)


def page_size(limit: int | None, page_size: int | None) -> int | None:
    """The page size to ask for: `page_size`, else no more than `limit` needs, within bounds."""
    size = page_size or (min(limit, MAX_PAGE_SIZE) if limit else None)
    return None if size is None else max(1, min(size, MAX_PAGE_SIZE))


def new_idempotency_key() -> str:
    """A fresh idempotency key, so that retrying an invocation can never run it twice."""
    return f"sdk-{uuid.uuid4().hex}"


def action_name(action: ActionRef) -> str:
    """The name of an action given by name, saved action or definition."""
    return action if isinstance(action, str) else action.name


# -- actions ---------------------------------------------------------------------------
def save_action(definition: models.ActionDefinition) -> Call[models.Action]:
    """``POST /v1/actions``: save a version (200 when an identical one exists)."""
    return Call("POST", "/v1/actions", _PARSE_ACTION, json=definition.model_dump(mode="json"))


def openjd_definition(
    name: str,
    *,
    template: Mapping[str, Any] | str | None = None,
    command: Sequence[str] | None = None,
    queue: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    retry: models.RetryPolicy | Mapping[str, Any] | None = None,
    requirements: models.Requirements | Mapping[str, Any] | None = None,
    quarantine_after: int | None = None,
    cacheable: bool | None = None,
    description: str | None = None,
) -> models.ActionDefinition:
    """An ``openjd`` action definition; options left as None keep the definition's defaults.

    Raises:
        ValidationError: a field is not valid (the template itself is checked by the
            server, with openjd-model).
    """
    options: dict[str, Any] = {
        "queue": queue,
        "timeout": timeout,
        "max_attempts": max_attempts,
        "retry": retry,
        "requirements": requirements,
        "quarantine_after": quarantine_after,
        "cacheable": cacheable,
        "description": description,
    }
    fields = {k: v for k, v in options.items() if v is not None}
    if template is not None:
        fields["template"] = template if isinstance(template, str) else dict(template)
    if command is not None:
        fields["command"] = list(command)
    try:
        return models.ActionDefinition(name=name, kind=models.ActionKind.OPENJD, **fields)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "action definition") from None


def get_action(name: str, version: int | None = None) -> Call[models.Action]:
    """``GET /v1/actions/{name}``: the latest version, or `version`."""
    return Call(
        "GET",
        f"/v1/actions/{segment(name)}",
        _PARSE_ACTION,
        params={"version": version},
        retry_safe=True,
    )


def list_actions(cursor: str | None, limit: int | None) -> Call[models.Page[models.Action]]:
    """``GET /v1/actions``: one page of the latest version of each action."""
    return Call(
        "GET",
        "/v1/actions",
        _model(models.Page[models.Action]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def action_versions(
    name: str, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Action]]:
    """``GET /v1/actions/{name}/versions``: one page of an action's versions."""
    return Call(
        "GET",
        f"/v1/actions/{segment(name)}/versions",
        _model(models.Page[models.Action]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


# -- operations ------------------------------------------------------------------------
def invocation(
    action: ActionRef,
    parameters: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    queue: str | None = None,
) -> models.Invocation:
    """The `Invocation` to send, always with an idempotency key (a fresh one if none given)."""
    try:
        return models.Invocation(
            action=action_name(action),
            version=version,
            parameters=dict(parameters or {}),
            idempotency_key=idempotency_key or new_idempotency_key(),
            timeout=timeout,
            queue=queue,
        )
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "invocation") from None


def as_invocation(item: models.Invocation | Mapping[str, Any]) -> models.Invocation:
    """An invocation for a bulk request, given as a model or a mapping, with a key set."""
    if isinstance(item, models.Invocation):
        if item.idempotency_key:
            return item
        return item.model_copy(update={"idempotency_key": new_idempotency_key()})
    fields = dict(item)
    if "action" in fields and not isinstance(fields["action"], str):
        fields["action"] = action_name(fields["action"])
    try:
        return invocation(**fields)
    except TypeError as exc:
        raise ValidationError(f"invalid invocation {item!r}: {exc}", field="invocations") from None


def invoke(body: models.Invocation) -> Call[models.Operation | None]:
    """``POST /v1/operations``: 201 new, 200 replay, 204 (None) cacheable no-op.

    Safe to retry because the invocation carries an idempotency key.
    """
    return Call(
        "POST",
        "/v1/operations",
        _maybe_operation,
        json=body.model_dump(mode="json"),
        retry_safe=body.idempotency_key is not None,
    )


def invoke_many(bodies: Iterable[models.Invocation]) -> Call[list[models.Operation | None]]:
    """``POST /v1/operations:bulk``: one answer per invocation, None for a cacheable no-op."""
    try:
        bulk = models.BulkInvocation(invocations=list(bodies))
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "bulk invocation") from None
    return Call(
        "POST",
        "/v1/operations:bulk",
        _bulk,
        json=bulk.model_dump(mode="json"),
        retry_safe=all(b.idempotency_key is not None for b in bulk.invocations),
    )


def get_operation(operation_id: str) -> Call[models.Operation]:
    """``GET /v1/operations/{id}``."""
    return Call("GET", f"/v1/operations/{segment(operation_id)}", _PARSE_OPERATION, retry_safe=True)


def wait_operation(operation_id: str, wait: float) -> Call[models.Operation]:
    """``GET /v1/operations/{id}:wait?timeout=S``: answers once done or after `wait` seconds."""
    wait = max(0.0, wait)
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}:wait",
        _PARSE_OPERATION,
        params={"timeout": round(wait, 3)},
        retry_safe=True,
        wait=wait,
    )


def list_operations(
    *,
    status: OperationStatus | str | None,
    action: str | None,
    created_by: str | None,
    cursor: str | None,
    limit: int | None,
) -> Call[models.Page[models.Operation]]:
    """``GET /v1/operations``: one page, newest first."""
    if status is not None:
        try:
            status = OperationStatus(status)
        except ValueError:
            names = ", ".join(OperationStatus)
            raise ValidationError(
                f"status must be one of {names}, got {status!r}", field="status"
            ) from None
    return Call(
        "GET",
        "/v1/operations",
        _model(models.Page[models.Operation]),
        params={
            "status": None if status is None else status.value,
            "action": action,
            "created_by": created_by,
            "cursor": cursor,
            "limit": limit,
        },
        retry_safe=True,
    )


def cancel_operation(operation_id: str) -> Call[models.Operation]:
    """``POST /v1/operations/{id}:cancel``: answers the operation as it now is."""
    return Call("POST", f"/v1/operations/{segment(operation_id)}:cancel", _PARSE_OPERATION)


def retry_operation(operation_id: str) -> Call[models.Operation]:
    """``POST /v1/operations/{id}:retry``: a new operation (never retried: it would make two)."""
    return Call("POST", f"/v1/operations/{segment(operation_id)}:retry", _PARSE_OPERATION)


def delete_operation(operation_id: str) -> Call[None]:
    """``DELETE /v1/operations/{id}``: only a finished operation (409 while it runs)."""
    return Call("DELETE", f"/v1/operations/{segment(operation_id)}", _nothing, retry_safe=True)


def operation_logs(
    operation_id: str, *, after: int, limit: int | None = None, wait: float = 0.0
) -> Call[models.Page[models.LogRecord]]:
    """``GET /v1/operations/{id}/logs``: records after `after`; `wait` > 0 long-polls."""
    wait = max(0.0, wait)
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/logs",
        _model(models.Page[models.LogRecord]),
        params={
            "after": after,
            "limit": limit,
            "follow": "true" if wait else None,
            "wait": round(wait, 3) if wait else None,
        },
        retry_safe=True,
        wait=wait,
    )


def operation_tasks(operation_id: str) -> Call[list[models.Task]]:
    """``GET /v1/operations/{id}/tasks``."""
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/tasks",
        _typed(list[models.Task]),
        retry_safe=True,
    )


def operation_session_actions(operation_id: str) -> Call[list[models.SessionAction]]:
    """``GET /v1/operations/{id}/session-actions``: every attempt at its work."""
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/session-actions",
        _typed(list[models.SessionAction]),
        retry_safe=True,
    )


SESSION_ACTION_FILTERS = ("operation_id", "session_id", "task_id")


def check_session_action_filters(
    operation_id: str | None, session_id: str | None, task_id: str | None
) -> None:
    """Raise `ValidationError` unless at least one filter is given (as the server would)."""
    if not any((operation_id, session_id, task_id)):
        raise ValidationError(
            "filter by at least one of " + ", ".join(SESSION_ACTION_FILTERS),
            fields=list(SESSION_ACTION_FILTERS),
        )


def list_session_actions(
    *,
    operation_id: str | None,
    session_id: str | None,
    task_id: str | None,
    cursor: str | None,
    limit: int | None,
) -> Call[models.Page[models.SessionAction]]:
    """``GET /v1/session-actions``: one page, oldest first, of an operation, session and/or task."""
    check_session_action_filters(operation_id, session_id, task_id)
    return Call(
        "GET",
        "/v1/session-actions",
        _model(models.Page[models.SessionAction]),
        params={
            "operation_id": operation_id,
            "session_id": session_id,
            "task_id": task_id,
            "cursor": cursor,
            "limit": limit,
        },
        retry_safe=True,
    )


def get_session_action(session_action_id: str) -> Call[models.SessionAction]:
    """``GET /v1/session-actions/{id}``."""
    return Call(
        "GET",
        f"/v1/session-actions/{segment(session_action_id)}",
        _model(models.SessionAction),
        retry_safe=True,
    )


# -- queues ----------------------------------------------------------------------------
def list_queues(cursor: str | None, limit: int | None) -> Call[models.Page[models.QueueStats]]:
    """``GET /v1/queues``: every queue, highest priority first (one page holds them all)."""
    return Call(
        "GET",
        "/v1/queues",
        _model(models.Page[models.QueueStats]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def configure_queue(name: str, priority: int, max_concurrency: int | None) -> Call[models.Queue]:
    """``PUT /v1/queues/{name}``: set both settings, creating the queue if new (admin)."""
    try:
        settings = models.QueueSettings(priority=priority, max_concurrency=max_concurrency)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "queue settings") from None
    return Call(
        "PUT",
        f"/v1/queues/{segment(name)}",
        _model(models.Queue),
        json=settings.model_dump(mode="json"),
        retry_safe=True,
    )


# -- workers, tokens, projects ---------------------------------------------------------
def list_workers(cursor: str | None, limit: int | None) -> Call[models.Page[models.Worker]]:
    """``GET /v1/workers``: one page, newest first."""
    return Call(
        "GET",
        "/v1/workers",
        _model(models.Page[models.Worker]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def get_worker(worker_id: str) -> Call[models.Worker]:
    """``GET /v1/workers/{id}``."""
    return Call("GET", f"/v1/workers/{segment(worker_id)}", _PARSE_WORKER, retry_safe=True)


def create_token(name: str, role: Role | str) -> Call[TokenCreated]:
    """``POST /v1/tokens``: a new token of the caller's project, with its secret."""
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise ValidationError(f"role must be one of {roles}, got {role!r}", field="role") from None
    return Call("POST", "/v1/tokens", _model(TokenCreated), json={"name": name, "role": role.value})


def list_tokens() -> Call[list[models.Token]]:
    """``GET /v1/tokens``: the project's tokens, never their secrets."""
    return Call("GET", "/v1/tokens", _typed(list[models.Token]), retry_safe=True)


def revoke_token(token_id: str) -> Call[models.Token]:
    """``DELETE /v1/tokens/{id}``: answers the revoked token."""
    return Call("DELETE", f"/v1/tokens/{segment(token_id)}", _model(models.Token), retry_safe=True)


def current_project() -> Call[models.Project]:
    """``GET /v1/projects/current``: the token's project."""
    return Call("GET", "/v1/projects/current", _model(models.Project), retry_safe=True)


def create_project(name: str) -> Call[ProjectCreated]:
    """``POST /v1/projects``: a new project and its first admin token."""
    return Call("POST", "/v1/projects", _model(ProjectCreated), json={"name": name})


def health() -> Call[dict[str, Any]]:
    """``GET /v1/healthz``: liveness (no token needed)."""
    return Call("GET", "/v1/healthz", _typed(dict[str, Any]), retry_safe=True)


# -- events ----------------------------------------------------------------------------
def stream_events(after: int | None) -> Call[None]:
    """``GET /v1/events``: Server-Sent Events after event `after` (from now on when None).

    The answer is read as a stream by `oprun.sdk.events`, never parsed whole.
    """
    return Call("GET", "/v1/events", _nothing, params={"after": after}, retry_safe=True)
