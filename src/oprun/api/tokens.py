"""/v1/tokens and /v1/projects."""

from __future__ import annotations

from fastapi import APIRouter

from oprun.api.deps import Caller, Svc
from oprun.domain.models import (
    Project,
    ProjectCreate,
    ProjectCreated,
    Token,
    TokenCreate,
    TokenCreated,
)

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.post("/tokens", response_model=TokenCreated, status_code=201, operation_id="createToken")
def create_token(body: TokenCreate, caller: Caller, svc: Svc) -> TokenCreated:
    """Create a token in the caller's project."""
    token, secret = svc.tokens.create(caller, body.name, body.role)
    return TokenCreated(token=token, secret=secret)


@router.get("/tokens", response_model=list[Token], operation_id="listTokens")
def list_tokens(caller: Caller, svc: Svc) -> list[Token]:
    """Tokens of the caller's project (never their secrets)."""
    return svc.tokens.list(caller)


@router.delete("/tokens/{token_id}", response_model=Token, operation_id="revokeToken")
def revoke_token(token_id: str, caller: Caller, svc: Svc) -> Token:
    """Revoke a token."""
    return svc.tokens.revoke(caller, token_id)


@router.get("/projects/current", response_model=Project, operation_id="currentProject")
def current_project(caller: Caller, svc: Svc) -> Project:
    """The caller's project."""
    return svc.tokens.current_project(caller)


@router.post(
    "/projects", response_model=ProjectCreated, status_code=201, operation_id="createProject"
)
def create_project(body: ProjectCreate, caller: Caller, svc: Svc) -> ProjectCreated:
    """A new project with its first admin token."""
    project, secret = svc.tokens.create_project(caller, body.name)
    return ProjectCreated(project=project, token=secret)
