"""The web UI's pages (Jobs, Operation, Actions, Workers, Queues) and their live fragments.

Every page reads through the services under the signed-in token, so it sees exactly
what the API would let that token see: another project's id is the not-found page,
and a viewer is offered no cancel or retry. Pages render on the server; small
scripts in `static/` follow `GET /v1/events` and patch in server-rendered fragments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio.to_thread import run_sync
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from oprun.api.deps import Svc, VersionNumber
from oprun.domain.errors import NotFound, ValidationError
from oprun.domain.models import Action, Operation
from oprun.domain.status import OperationStatus
from oprun.web import session, views
from oprun.web.session import FragmentRoute, Page, PageContext, WebRoute
from oprun.web.templating import STATIC_DIR, render

router = APIRouter(route_class=WebRoute, include_in_schema=False)
fragments = APIRouter(route_class=FragmentRoute, include_in_schema=False)

RECENT_RUNS = 20
"""Runs drawn in an action's sparkline."""
LOG_LINES_IN_PAGE = 500
"""Log lines rendered with the operation page; its script fetches the rest."""
TASKS_IN_PAGE = 500
"""Tasks drawn on one page of an operation; a pager leads to the rest."""
ATTEMPTS_IN_PAGE = 500
"""Session actions drawn on one page of an operation; a pager of their own leads on."""
PageSize = Annotated[int | None, Query(ge=1, le=500)]


def _context(page: PageContext, section: str, **values: Any) -> dict[str, Any]:
    return {"page": page, "section": section, "now": page.now, **values}


def _status(value: str | None) -> OperationStatus | None:
    if not value:
        return None
    try:
        return OperationStatus(value)
    except ValueError as exc:
        allowed = ", ".join(s.value for s in OperationStatus)
        raise ValidationError(f"status {value!r} is not one of {allowed}", field="status") from exc


@router.get("/")
def home() -> Response:
    """The Jobs page is the home page."""
    return RedirectResponse(session.HOME, status_code=303)


# -- Jobs ---------------------------------------------------------------------------------
@router.get("/jobs")
def jobs(
    request: Request,
    page: Page,
    svc: Svc,
    status: str | None = None,
    action: str | None = None,
    created_by: str | None = None,
    q: str | None = None,
    cursor: str | None = None,
    limit: PageSize = None,
) -> Response:
    """Operations of the project, newest first, live; filtered, searched by id, paged."""
    caller = page.caller
    wanted = _status(status)
    action = (action or "").strip() or None
    created_by = (created_by or "").strip() or None
    q = (q or "").strip() or None
    # Read the event position first: every change after it reaches the page's stream.
    after = svc.events.latest(caller)
    next_cursor: str | None = None
    if q is not None:
        try:
            ops = [svc.operations.get(caller, q)]
        except NotFound:
            ops = []
    else:
        found = svc.operations.page(
            caller,
            status=wanted,
            action=action,
            created_by=created_by,
            page_cursor=cursor or None,
            limit=limit,
        )
        ops, next_cursor = found.items, found.next_cursor
    actions = svc.actions.page(caller, None, 500).items
    filters = {"status": status or "", "action": action or "", "created_by": created_by or ""}
    query = {k: v for k, v in filters.items() if v}
    if limit:
        query["limit"] = str(limit)
    return render(
        request,
        "jobs.html",
        _context(
            page,
            "jobs",
            ops=ops,
            after=after,
            statuses=[s.value for s in OperationStatus],
            action_names=[a.name for a in actions],
            filters=filters,
            query=query,
            q=q or "",
            paged=bool(cursor),
            next_cursor=next_cursor,
            live_insert=not cursor and q is None,
        ),
    )


@fragments.get("/jobs/rows/{operation_id}")
def job_row(request: Request, operation_id: str, page: Page, svc: Svc) -> Response:
    """One row of the Jobs table, as it is now (for live updates)."""
    op = svc.operations.get(page.caller, operation_id)
    return render(request, "_job_row.html", _context(page, "jobs", op=op))


# -- Operation ----------------------------------------------------------------------------
def _operation_parts(
    svc: Svc,
    page: PageContext,
    operation_id: str,
    cursor: str | None,
    attempts_cursor: str | None = None,
) -> dict[str, Any]:
    """What the operation page draws: its page of tasks (`cursor`) and of attempts.

    Each pager keeps the other's position (`tasks_keep`, `attempts_keep`).
    """
    op: Operation = svc.operations.get(page.caller, operation_id)
    tasks = svc.operations.tasks(page.caller, operation_id, cursor or None, TASKS_IN_PAGE)
    attempts = svc.operations.session_actions(
        page.caller, operation_id, attempts_cursor or None, ATTEMPTS_IN_PAGE
    )
    return {
        "op": op,
        "tasks": tasks.items,
        "tasks_next": tasks.next_cursor,
        "tasks_paged": bool(cursor),
        "tasks_keep": {"attempts_cursor": attempts_cursor} if attempts_cursor else {},
        "sessions": views.sessions(attempts.items),
        "attempts_next": attempts.next_cursor,
        "attempts_paged": bool(attempts_cursor),
        "attempts_keep": {"cursor": cursor} if cursor else {},
        "timeline": views.timeline(op.history, ongoing=not op.status.is_terminal()),
    }


@router.get("/operations/{operation_id}")
async def operation(
    request: Request,
    operation_id: str,
    page: Page,
    svc: Svc,
    cursor: str | None = None,
    attempts_cursor: str | None = None,
) -> Response:
    """One operation: status, progress, timeline, tasks, attempts, live logs, outcome.

    Its tasks are paged (`cursor` names the page, `TASKS_IN_PAGE` each), and so are
    its session actions (`attempts_cursor`, `ATTEMPTS_IN_PAGE` each).
    """
    # Read the event position first: every change after it reaches the page's stream.
    after = await run_sync(svc.events.latest, page.caller)
    parts = await run_sync(_operation_parts, svc, page, operation_id, cursor, attempts_cursor)
    logs = await svc.operations.logs(page.caller, operation_id, 0, LOG_LINES_IN_PAGE, 0)
    return render(
        request,
        "operation.html",
        _context(page, "jobs", logs=logs.items, log_after=logs.next_cursor, after=after, **parts),
    )


@fragments.get("/operations/{operation_id}/live")
def operation_live(
    request: Request,
    operation_id: str,
    page: Page,
    svc: Svc,
    cursor: str | None = None,
    attempts_cursor: str | None = None,
) -> Response:
    """The parts of an operation page that change, as they are now (the same pages)."""
    parts = _operation_parts(svc, page, operation_id, cursor, attempts_cursor)
    return render(request, "_operation_live.html", _context(page, "jobs", **parts))


@router.get("/operations/{operation_id}/logs.txt")
async def download_logs(operation_id: str, page: Page, svc: Svc) -> Response:
    """Every log line of an operation as a text file."""
    first = await svc.operations.logs(page.caller, operation_id, 0, 500, 0)

    async def lines() -> AsyncIterator[str]:
        batch = first
        while batch.items:
            for record in batch.items:
                yield f"{views.iso(record.at)} {record.stream} {record.line}\n"
            if len(batch.items) < 500:
                return
            batch = await svc.operations.logs(
                page.caller, operation_id, batch.items[-1].seq, 500, 0
            )

    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{operation_id}.log"'},
    )


# -- Actions ------------------------------------------------------------------------------
def _recent(svc: Svc, page: PageContext, name: str) -> list[Operation]:
    return svc.operations.page(page.caller, action=name, limit=RECENT_RUNS).items


@router.get("/actions")
def actions(
    request: Request, page: Page, svc: Svc, cursor: str | None = None, limit: PageSize = None
) -> Response:
    """Actions of the project (latest versions) with their recent runs."""
    found = svc.actions.page(page.caller, cursor or None, limit)
    rows = [(a, views.sparkline(_recent(svc, page, a.name))) for a in found.items]
    return render(
        request,
        "actions.html",
        _context(page, "actions", rows=rows, next_cursor=found.next_cursor, paged=bool(cursor)),
    )


@router.get("/actions/{name}")
def action(
    request: Request,
    name: str,
    page: Page,
    svc: Svc,
    version: VersionNumber = None,
    cursor: str | None = None,
) -> Response:
    """One action: a version's definition and parameters, every version, recent runs."""
    shown: Action = svc.actions.get(page.caller, name, version)
    versions = svc.actions.versions(page.caller, name, cursor or None, 20)
    runs = _recent(svc, page, name)
    return render(
        request,
        "action.html",
        _context(
            page,
            "actions",
            action=shown,
            versions=versions.items,
            next_cursor=versions.next_cursor,
            runs=runs,
            spark=views.sparkline(runs),
        ),
    )


# -- Workers ------------------------------------------------------------------------------
@router.get("/workers")
def workers(
    request: Request, page: Page, svc: Svc, cursor: str | None = None, limit: PageSize = None
) -> Response:
    """Registered workers: status, heartbeat age, queues, capabilities."""
    found = svc.workers.page(page.caller, cursor or None, limit)
    return render(
        request,
        "workers.html",
        _context(
            page, "workers", workers=found.items, next_cursor=found.next_cursor, paged=bool(cursor)
        ),
    )


# -- Queues -------------------------------------------------------------------------------
@router.get("/queues")
def queues(
    request: Request, page: Page, svc: Svc, cursor: str | None = None, limit: PageSize = None
) -> Response:
    """Queues: work waiting and running, and the last hour's throughput per minute."""
    found = svc.queues.page(page.caller, cursor or None, limit)
    rows = [(q, views.throughput_chart(q.throughput, q.at)) for q in found.items]
    context = _context(page, "queues", rows=rows, next_cursor=found.next_cursor, paged=bool(cursor))
    return render(request, "queues.html", context)


def static_files() -> StaticFiles:
    """The UI's stylesheet, scripts and icon."""
    return StaticFiles(directory=STATIC_DIR)


__all__ = ["fragments", "router", "static_files"]
