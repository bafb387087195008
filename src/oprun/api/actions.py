"""/v1/actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from oprun.api.deps import Caller, Svc, VersionNumber
from oprun.domain.models import Action, ActionDefinition, Page

router = APIRouter(prefix="/v1", tags=["actions"])


@router.post("/actions", response_model=Action, status_code=201, operation_id="saveAction")
def save_action(definition: ActionDefinition, caller: Caller, svc: Svc) -> Response:
    """Save a version of an action: 201 new, 200 when an identical version exists."""
    action, created = svc.actions.save(caller, definition)
    return Response(
        action.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


@router.get("/actions", response_model=Page[Action], operation_id="listActions")
def list_actions(
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Page[Action]:
    """The latest version of each action."""
    return svc.actions.page(caller, cursor, limit)


@router.get("/actions/{name}", response_model=Action, operation_id="getAction")
def get_action(name: str, caller: Caller, svc: Svc, version: VersionNumber = None) -> Action:
    """One version of an action (the latest by default)."""
    return svc.actions.get(caller, name, version)


@router.get("/actions/{name}/versions", response_model=Page[Action], operation_id="listVersions")
def list_versions(
    name: str,
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Page[Action]:
    """Every version of an action, newest first."""
    return svc.actions.versions(caller, name, cursor, limit)
