"""Rows of the work tables as domain records."""

from __future__ import annotations

from typing import Any

from oprun.domain.models import (
    ActionProvenance,
    InvocationSource,
    Operation,
    OperationError,
    Progress,
    Provenance,
    SessionAction,
    SourceProvenance,
    StatusRecord,
    Task,
    TaskCounts,
)
from oprun.domain.status import OperationStatus, SessionActionStatus
from oprun.store.base import at, to_datetime


def counts_of(row: Any) -> TaskCounts:
    """The task counters of an operation row."""
    return TaskCounts(
        queued=row.n_queued,
        running=row.n_running,
        succeeded=row.n_succeeded,
        failed=row.n_failed,
        canceled=row.n_canceled,
    )


def overall_percent(reported: float | None, counts: TaskCounts) -> float | None:
    """An operation's percent: what its one task reported, or the share of tasks ended."""
    total = counts.queued + counts.running + counts.succeeded + counts.failed + counts.canceled
    if total <= 1:
        return reported
    return round(100.0 * (total - counts.queued - counts.running) / total, 1)


def operation(row: Any, history: list[StatusRecord] | None = None) -> Operation:
    """An operation row (a Row or a mapping with attribute access) as a record."""
    error = OperationError.model_validate(row.error) if row.error else None
    counts = counts_of(row)
    return Operation(
        id=row.id,
        project_id=row.project_id,
        kind=row.action_name,
        action_id=row.action_id,
        action_version=row.action_version,
        queue=row.queue_name,
        status=OperationStatus(row.status),
        step_code=row.step_code,
        progress=Progress(
            percent=overall_percent(row.progress_percent, counts),
            message=row.progress_message,
            counts=counts,
        ),
        parameters=row.parameters,
        result=row.result,
        error=error,
        exit_reason=row.exit_reason,
        created_by=row.created_by,
        idempotency_key=row.idempotency_key,
        timeout=row.timeout,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        worker_id=row.worker_id,
        created_at=at(row.created_at),
        updated_at=at(row.updated_at),
        started_at=to_datetime(row.started_at),
        ended_at=to_datetime(row.ended_at),
        provenance=Provenance(
            action=ActionProvenance(
                name=row.action_name,
                version=row.action_version,
                digest=row.action_digest,
                project_id=row.project_id,
            ),
            source=SourceProvenance(
                source_type=InvocationSource(row.source_type), source_id=row.source_id
            ),
        ),
        history=history or [],
    )


def history(rows: Any) -> list[StatusRecord]:
    """Status history rows as records."""
    return [StatusRecord(status=r.status, at=at(r.at), detail=r.detail) for r in rows]


def history_of_json(entries: list[list[Any]] | None) -> list[StatusRecord]:
    """A status history aggregated as JSON ([status, detail, at] each, in order) as records."""
    return [StatusRecord(status=s, at=at(when), detail=d) for s, d, when in entries or ()]


def task(row: Any) -> Task:
    """A task row as a record."""
    return Task(
        id=row.id,
        operation_id=row.operation_id,
        project_id=row.project_id,
        step_id=row.step_id,
        status=OperationStatus(row.status),
        parameters=row.parameters,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        created_at=at(row.created_at),
        updated_at=at(row.updated_at),
    )


def session_action(row: Any, hist: list[StatusRecord] | None = None) -> SessionAction:
    """A session action row as a record."""
    return SessionAction(
        id=row.id,
        session_id=row.session_id,
        operation_id=row.operation_id,
        task_id=row.task_id,
        worker_id=row.worker_id,
        status=SessionActionStatus(row.status),
        lease_epoch=row.lease_epoch,
        started_at=to_datetime(row.started_at),
        ended_at=to_datetime(row.ended_at),
        worker_updated_at=to_datetime(row.worker_updated_at),
        progress_percent=row.progress_percent,
        progress_message=row.progress_message,
        process_exit_code=row.process_exit_code,
        definition=row.definition,
        history=hist or [],
    )
