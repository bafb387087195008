"""/v1/workers: registration, claims, heartbeats and reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from oprun.api.deps import Caller, Hangup, Svc
from oprun.domain.limits import MAX_WAIT_SECONDS
from oprun.domain.models import Page, Worker
from oprun.domain.protocol import (
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    ReportBatch,
    ReportBatchResponse,
    WorkerRegistration,
)

router = APIRouter(prefix="/v1", tags=["workers"])


def _json(model: BaseModel) -> Response:
    """`model` as JSON, serialized once.

    The hot endpoints skip FastAPI's validation of what they return (a model built
    by the service is valid); `response_model` still documents it in the OpenAPI schema.
    """
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("/workers", response_model=Worker, status_code=201, operation_id="registerWorker")
def register_worker(registration: WorkerRegistration, caller: Caller, svc: Svc) -> Worker:
    """Register a worker agent and the actions it serves."""
    return svc.workers.register(caller, registration)


@router.get("/workers", response_model=Page[Worker], operation_id="listWorkers")
def list_workers(
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Page[Worker]:
    """Workers of the project, newest first."""
    return svc.workers.page(caller, cursor, limit)


@router.post("/workers/{worker_id}:claim", response_model=ClaimResponse, operation_id="claimWork")
async def claim(
    worker_id: str, body: ClaimRequest, caller: Caller, svc: Svc, gone: Hangup
) -> Response:
    """Long poll for up to `max` tasks."""
    return _json(await svc.workers.claim(caller, worker_id, body, gone))


@router.post(
    "/workers/{worker_id}:heartbeat", response_model=HeartbeatResponse, operation_id="heartbeat"
)
async def heartbeat(
    worker_id: str,
    beat: Heartbeat,
    caller: Caller,
    svc: Svc,
    gone: Hangup,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0.0,
) -> Response:
    """Renew leases; answers early when held work is canceled."""
    return _json(await svc.workers.heartbeat(caller, worker_id, beat, wait, gone))


@router.post(
    "/workers/{worker_id}:report", response_model=ReportBatchResponse, operation_id="report"
)
def report(worker_id: str, batch: ReportBatch, caller: Caller, svc: Svc) -> Response:
    """Apply reports in order; each outcome says whether it was accepted."""
    return _json(svc.workers.report(caller, worker_id, batch))


@router.get("/workers/{worker_id}", response_model=Worker, operation_id="getWorker")
def get_worker(worker_id: str, caller: Caller, svc: Svc) -> Worker:
    """One worker."""
    return svc.workers.get(caller, worker_id)
