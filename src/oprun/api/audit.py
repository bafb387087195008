"""/v1/audit: the audit log of security-relevant events, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from oprun.api.deps import Caller, Svc
from oprun.domain.audit import AuditKind, AuditRecord
from oprun.domain.models import Page

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", response_model=Page[AuditRecord], operation_id="listAudit")
def list_audit(
    caller: Caller,
    svc: Svc,
    kind: AuditKind | None = None,
    actor: Annotated[str | None, Query(max_length=64, description="a token id")] = None,
    since: Annotated[datetime | None, Query(description="from this time (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="before this time")] = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """The audit log, newest first, paged (admins only).

    Tokens created, revoked and rotated; action versions saved; queues configured;
    projects created; retention changed; failed authentications (at most one row per
    client address per second and API process, `details.unrecorded` counting the
    failures it stands for). An admin reads their project's rows; an admin of the
    server's first project also reads the server's own rows (`project_id` null).
    Times without a zone are UTC.
    """
    page = svc.audit.page(
        caller,
        cursor,
        limit,
        kind=None if kind is None else kind.value,
        actor=actor,
        since=since,
        until=until,
    )
    return Response(page.model_dump_json(), media_type="application/json")
