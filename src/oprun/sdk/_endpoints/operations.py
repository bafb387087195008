"""Endpoint builders of operations (invoke, wait, list, cancel, logs, ...) and session actions.

No I/O: each returns the `Call` to send, after checking what it can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import pydantic

from oprun.domain import models
from oprun.domain.errors import ValidationError
from oprun.domain.status import OperationStatus
from oprun.sdk._endpoints._common import (
    ActionRef,
    action_name,
    new_idempotency_key,
    parse_model,
    parse_nothing,
)
from oprun.sdk._requests import Call, from_pydantic, handle, segment


def _maybe_operation(response: httpx.Response) -> models.Operation | None:
    if response.status_code == 204:
        return None
    return models.Operation.model_validate_json(response.content)


def read_invocation(response: httpx.Response) -> models.Operation | None:
    """An invocation's answer: its operation, or None for 204; raises an error response's error."""
    return handle(Call("POST", "/v1/operations", _maybe_operation), response)


def _bulk(response: httpx.Response) -> list[models.Operation | None]:
    return models.BulkInvocationResult.model_validate_json(response.content).operations


_PARSE_OPERATION = parse_model(models.Operation)


def invocation(
    action: ActionRef,
    parameters: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    action_digest: str | None = None,
) -> models.Invocation:
    """The `Invocation` to send, always with an idempotency key (a fresh one if none given)."""
    try:
        return models.Invocation(
            action=action_name(action),
            version=version,
            action_digest=action_digest,
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


def _invocation_json(body: models.Invocation) -> dict[str, Any]:
    # Fields newer than a server are sent only when set: an API process of the previous
    # release (during a rolling upgrade) refuses fields it does not know.
    unset = {"action_digest"} if body.action_digest is None else set()
    return body.model_dump(mode="json", exclude=unset)


def invoke(body: models.Invocation) -> Call[models.Operation | None]:
    """``POST /v1/operations``: 201 new, 200 replay, 204 (None) cacheable no-op.

    Safe to retry because the invocation carries an idempotency key.
    """
    return Call(
        "POST",
        "/v1/operations",
        _maybe_operation,
        json=_invocation_json(body),
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
        json={"invocations": [_invocation_json(b) for b in bulk.invocations]},
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
        parse_model(models.Page[models.Operation]),
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
    return Call("DELETE", f"/v1/operations/{segment(operation_id)}", parse_nothing, retry_safe=True)


def operation_logs(
    operation_id: str, *, after: int, limit: int | None = None, wait: float = 0.0
) -> Call[models.Page[models.LogRecord]]:
    """``GET /v1/operations/{id}/logs``: records after `after`; `wait` > 0 long-polls."""
    wait = max(0.0, wait)
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/logs",
        parse_model(models.Page[models.LogRecord]),
        params={
            "after": after,
            "limit": limit,
            "follow": "true" if wait else None,
            "wait": round(wait, 3) if wait else None,
        },
        retry_safe=True,
        wait=wait,
    )


def operation_tasks(
    operation_id: str, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Task]]:
    """``GET /v1/operations/{id}/tasks``: a page of its tasks, oldest first."""
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/tasks",
        parse_model(models.Page[models.Task]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def operation_session_actions(
    operation_id: str, cursor: str | None, limit: int | None
) -> Call[models.Page[models.SessionAction]]:
    """``GET /v1/operations/{id}/session-actions``: a page of the attempts at its work."""
    return Call(
        "GET",
        f"/v1/operations/{segment(operation_id)}/session-actions",
        parse_model(models.Page[models.SessionAction]),
        params={"cursor": cursor, "limit": limit},
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
        parse_model(models.Page[models.SessionAction]),
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
        parse_model(models.SessionAction),
        retry_safe=True,
    )
