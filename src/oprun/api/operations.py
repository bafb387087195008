"""/v1/operations and /v1/session-actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from oprun.api.deps import Caller, Hangup, Position, Svc
from oprun.api.openapi import error_responses
from oprun.domain.errors import Conflict, NotFound
from oprun.domain.limits import MAX_WAIT_SECONDS
from oprun.domain.models import (
    BulkInvocation,
    BulkInvocationIds,
    BulkInvocationResult,
    Invocation,
    LogRecord,
    Operation,
    Page,
    SessionAction,
    Task,
)
from oprun.domain.status import OperationStatus

router = APIRouter(prefix="/v1", tags=["operations"])


@router.post(
    "/operations",
    response_model=Operation,
    status_code=201,
    operation_id="invokeAction",
    responses={
        200: {"description": "idempotent replay"},
        204: {"description": "cacheable hit"},
        **error_responses(NotFound, Conflict),
    },
)
def invoke(invocation: Invocation, caller: Caller, svc: Svc) -> Response:
    """Invoke an action: 201 new operation, 200 replay of an idempotency key, 204 nothing to do."""
    op, created = svc.operations.invoke(caller, invocation)
    if op is None:
        return Response(status_code=204)
    return Response(
        op.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


def prefers_minimal(prefer: str | None) -> bool:
    """Whether a `Prefer` header (RFC 7240) asks for ``return=minimal``."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
            return True
    return False


@router.post(
    "/operations:bulk",
    response_model=BulkInvocationResult | BulkInvocationIds,
    operation_id="invokeActionsBulk",
    responses=error_responses(NotFound, Conflict),
)
def invoke_bulk(
    body: BulkInvocation,
    caller: Caller,
    svc: Svc,
    prefer: Annotated[
        str | None,
        Header(description="`return=minimal`: answer the operations' ids, not their records"),
    ] = None,
) -> Response:
    """Invoke many actions in one transaction.

    The answer holds each operation's record; with ``Prefer: return=minimal`` only
    their ids (about 40 bytes an operation to send and to parse instead of 925), and
    the response says so in ``Preference-Applied``.
    """
    ops = svc.operations.invoke_many(caller, body.invocations)
    if prefers_minimal(prefer):
        ids = BulkInvocationIds(ids=[None if op is None else op.id for op in ops])
        return Response(
            ids.model_dump_json(),
            media_type="application/json",
            headers={"Preference-Applied": "return=minimal"},
        )
    return Response(
        BulkInvocationResult(operations=ops).model_dump_json(), media_type="application/json"
    )


@router.get("/operations", response_model=Page[Operation], operation_id="listOperations")
def list_operations(
    caller: Caller,
    svc: Svc,
    status: OperationStatus | None = None,
    action: str | None = None,
    created_by: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """Operations of the project, newest first."""
    page = svc.operations.page(
        caller,
        status=status,
        action=action,
        created_by=created_by,
        page_cursor=cursor,
        limit=limit,
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/operations/{operation_id}:wait", response_model=Operation, operation_id="waitOperation"
)
async def wait_operation(
    operation_id: str,
    caller: Caller,
    svc: Svc,
    gone: Hangup,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 30.0,
) -> Response:
    """Long poll: the operation once done, or as it is after `timeout` seconds."""
    op = await svc.operations.wait(caller, operation_id, timeout, gone)
    return Response(op.model_dump_json(), media_type="application/json")


@router.post(
    "/operations/{operation_id}:cancel",
    response_model=Operation,
    operation_id="cancelOperation",
    responses=error_responses(Conflict),
)
def cancel_operation(operation_id: str, caller: Caller, svc: Svc) -> Response:
    """Cancel: queued work never starts; running work is stopped by its worker."""
    op = svc.operations.cancel(caller, operation_id)
    return Response(op.model_dump_json(), media_type="application/json")


@router.post(
    "/operations/{operation_id}:retry",
    response_model=Operation,
    status_code=201,
    operation_id="retryOperation",
)
def retry_operation(operation_id: str, caller: Caller, svc: Svc) -> Response:
    """A new operation with the same action version and parameters."""
    op = svc.operations.retry(caller, operation_id)
    return Response(op.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/operations/{operation_id}", response_model=Operation, operation_id="getOperation")
def get_operation(operation_id: str, caller: Caller, svc: Svc) -> Response:
    """One operation, with its status history."""
    op = svc.operations.get(caller, operation_id)
    return Response(op.model_dump_json(), media_type="application/json")


@router.delete(
    "/operations/{operation_id}",
    status_code=204,
    operation_id="deleteOperation",
    responses=error_responses(Conflict),
)
def delete_operation(operation_id: str, caller: Caller, svc: Svc) -> Response:
    """Delete a finished operation and its records."""
    svc.operations.delete(caller, operation_id)
    return Response(status_code=204)


@router.get(
    "/operations/{operation_id}/logs", response_model=Page[LogRecord], operation_id="getLogs"
)
async def get_logs(
    operation_id: str,
    caller: Caller,
    svc: Svc,
    gone: Hangup,
    after: Position = 0,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
    follow: bool = False,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 20.0,
) -> Response:
    """Log records after sequence `after`; `follow=true` long-polls up to `wait` seconds."""
    page = await svc.operations.logs(
        caller, operation_id, after, limit, wait if follow else 0, gone
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get("/operations/{operation_id}/tasks", response_model=Page[Task], operation_id="listTasks")
def list_tasks(
    operation_id: str,
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """The operation's tasks, oldest first, paged."""
    page = svc.operations.tasks(caller, operation_id, cursor, limit)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/operations/{operation_id}/session-actions",
    response_model=Page[SessionAction],
    operation_id="listSessionActions",
)
def list_session_actions(
    operation_id: str,
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """The attempts at the operation's work, oldest first (each session in order), paged."""
    page = svc.operations.session_actions(caller, operation_id, cursor, limit)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/session-actions",
    response_model=Page[SessionAction],
    operation_id="listSessionActionsByFilter",
)
def list_session_actions_by_filter(
    caller: Caller,
    svc: Svc,
    operation_id: Annotated[str | None, Query(max_length=64)] = None,
    session_id: Annotated[str | None, Query(max_length=64)] = None,
    task_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """Session actions of an operation, a session and/or a task (at least one), oldest first."""
    page = svc.operations.session_action_page(
        caller,
        operation_id=operation_id,
        session_id=session_id,
        task_id=task_id,
        page_cursor=cursor,
        limit=limit,
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/session-actions/{session_action_id}",
    response_model=SessionAction,
    operation_id="getSessionAction",
)
def get_session_action(session_action_id: str, caller: Caller, svc: Svc) -> SessionAction:
    """One session action (Deadline's get_session_action)."""
    return svc.operations.session_action(caller, session_action_id)
