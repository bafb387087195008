"""The web UI's Audit page: the audit log, for admins (others get the 403 page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from oprun.api.deps import Svc
from oprun.domain.audit import AuditKind
from oprun.web.session import Page, WebRoute
from oprun.web.templating import render

router = APIRouter(route_class=WebRoute, include_in_schema=False)

KINDS = [kind.value for kind in AuditKind]


@router.get("/audit")
def audit(
    request: Request,
    page: Page,
    svc: Svc,
    kind: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """Security-relevant events of the project, newest first, filtered by kind, paged."""
    kind = kind or None
    found = svc.audit.page(page.caller, cursor or None, limit, kind=kind)
    context = {
        "page": page,
        "section": "audit",
        "now": page.now,
        "rows": found.items,
        "kinds": KINDS,
        "kind": kind or "",
        "next_cursor": found.next_cursor,
        "paged": bool(cursor),
        "server_rows": svc.audit.sees_server_rows(page.caller),
    }
    return render(request, "audit.html", context)
