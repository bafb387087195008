"""/v1/queues: depth, running work and recent throughput of each queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from oprun.api.deps import Caller, Svc
from oprun.domain.models import Page, Queue, QueueName, QueueSettings, QueueStats

router = APIRouter(prefix="/v1", tags=["queues"])


@router.get("/queues", response_model=Page[QueueStats], operation_id="listQueues")
def list_queues(
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Page[QueueStats]:
    """The project's queues, highest priority first, then by name (paged).

    Each carries the tasks waiting (`depth`) and running (`running`), and the tasks that
    ended in each of the last 60 minutes (`throughput`, oldest first) with the hour's
    `succeeded` and `failed`.
    """
    return svc.queues.page(caller, cursor, limit)


@router.put("/queues/{name}", response_model=Queue, operation_id="configureQueue")
def configure_queue(
    name: Annotated[QueueName, Path()], settings: QueueSettings, caller: Caller, svc: Svc
) -> Queue:
    """Set a queue's priority and concurrency limit (admin); creates the queue if new.

    `priority`: higher is served first. `max_concurrency`: most of its tasks running
    at once (null: no limit).
    """
    return svc.queues.configure(caller, name, settings)
