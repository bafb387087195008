"""/v1/tokens and /v1/projects (with a project's retention)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from oprun.api.deps import Caller, Svc
from oprun.api.openapi import error_responses
from oprun.domain.errors import Conflict
from oprun.domain.models import (
    Page,
    Project,
    ProjectCreate,
    ProjectCreated,
    Token,
    TokenCreate,
    TokenCreated,
)
from oprun.domain.retention import Retention, RetentionSettings

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=201, operation_id="createToken")
def create_token(body: TokenCreate, caller: Caller, svc: Svc) -> TokenCreated:
    """Create a token in the caller's project."""
    token, secret = svc.tokens.create(caller, body.name, body.role, body.expires_in)
    return TokenCreated(token=token, secret=secret)


@router.get("/tokens", response_model=Page[Token], operation_id="listTokens")
def list_tokens(
    caller: Caller,
    svc: Svc,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> Response:
    """Tokens of the caller's project, oldest first, paged (never their secrets)."""
    page = svc.tokens.page(caller, cursor, limit)
    return Response(page.model_dump_json(), media_type="application/json")


@router.delete(
    "/tokens/{token_id}",
    response_model=Token,
    operation_id="revokeToken",
    responses=error_responses(Conflict),  # the project's last admin token
)
def revoke_token(token_id: str, caller: Caller, svc: Svc) -> Token:
    """Revoke a token."""
    return svc.tokens.revoke(caller, token_id)


@router.post(
    "/tokens/{token_id}:rotate",
    response_model=TokenCreated,
    status_code=201,
    operation_id="rotateToken",
)
def rotate_token(token_id: str, caller: Caller, svc: Svc) -> TokenCreated:
    """Replace a token by a new one with the same name, role and expiry; revoke the old."""
    token, secret = svc.tokens.rotate(caller, token_id)
    return TokenCreated(token=token, secret=secret)


@router.get("/projects/current", response_model=Project, operation_id="currentProject")
def current_project(caller: Caller, svc: Svc) -> Project:
    """The caller's project."""
    return svc.tokens.current_project(caller)


@router.get("/projects/current/retention", response_model=Retention, operation_id="getRetention")
def get_retention(caller: Caller, svc: Svc) -> Retention:
    """How long the caller's project keeps its finished operations.

    `days` and `max_operations` are the project's own settings (null: the server's
    default, `OPRUN_RETENTION_DAYS` and `OPRUN_RETENTION_MAX_OPERATIONS`);
    `effective_days` and `effective_max_operations` are what the purge applies.
    """
    return svc.retention.get(caller)


@router.put("/projects/current/retention", response_model=Retention, operation_id="setRetention")
def set_retention(body: RetentionSettings, caller: Caller, svc: Svc) -> Retention:
    """Set the project's own retention (admin); a null field takes the server's default.

    Finished operations are purged, with their tasks, attempts, history and logs, once
    they ended more than `days` ago or once `max_operations` newer ones exist.
    """
    return svc.retention.set(caller, body)


@router.post(
    "/projects", response_model=ProjectCreated, status_code=201, operation_id="createProject"
)
def create_project(body: ProjectCreate, caller: Caller, svc: Svc) -> ProjectCreated:
    """A new project with its first admin token."""
    project, secret = svc.tokens.create_project(caller, body.name)
    return ProjectCreated(project=project, token=secret)
