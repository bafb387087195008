"""Endpoint builders of the project's queues, workers, tokens and events, and of health.

No I/O: each returns the `Call` to send, after checking what it can.
"""

from __future__ import annotations

from typing import Any

import pydantic

from oprun.domain import models
from oprun.domain.errors import ValidationError
from oprun.domain.roles import Role
from oprun.sdk._endpoints._common import (
    ProjectCreated,
    TokenCreated,
    parse_model,
    parse_nothing,
    parse_typed,
)
from oprun.sdk._requests import Call, from_pydantic, segment

_PARSE_WORKER = parse_model(models.Worker)


# -- queues ----------------------------------------------------------------------------
def list_queues(cursor: str | None, limit: int | None) -> Call[models.Page[models.QueueStats]]:
    """``GET /v1/queues``: a page of queues, highest priority first, then by name."""
    return Call(
        "GET",
        "/v1/queues",
        parse_model(models.Page[models.QueueStats]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def configure_queue(name: str, priority: int, max_concurrency: int | None) -> Call[models.Queue]:
    """``PUT /v1/queues/{name}``: set both settings, creating the queue if new (admin)."""
    try:
        settings = models.QueueSettings(priority=priority, max_concurrency=max_concurrency)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "queue settings") from None
    return Call(
        "PUT",
        f"/v1/queues/{segment(name)}",
        parse_model(models.Queue),
        json=settings.model_dump(mode="json"),
        retry_safe=True,
    )


# -- workers, tokens, projects ---------------------------------------------------------
def list_workers(cursor: str | None, limit: int | None) -> Call[models.Page[models.Worker]]:
    """``GET /v1/workers``: one page, newest first."""
    return Call(
        "GET",
        "/v1/workers",
        parse_model(models.Page[models.Worker]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def get_worker(worker_id: str) -> Call[models.Worker]:
    """``GET /v1/workers/{id}``."""
    return Call("GET", f"/v1/workers/{segment(worker_id)}", _PARSE_WORKER, retry_safe=True)


def create_token(
    name: str, role: Role | str, expires_in: float | None = None
) -> Call[TokenCreated]:
    """``POST /v1/tokens``: a new token of the caller's project, with its secret.

    `expires_in`: seconds until it expires (None: it lives until revoked).
    """
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise ValidationError(f"role must be one of {roles}, got {role!r}", field="role") from None
    body: dict[str, object] = {"name": name, "role": role.value}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return Call("POST", "/v1/tokens", parse_model(TokenCreated), json=body)


def list_tokens(cursor: str | None, limit: int | None) -> Call[models.Page[models.Token]]:
    """``GET /v1/tokens``: a page of the project's tokens, oldest first, never their secrets."""
    return Call(
        "GET",
        "/v1/tokens",
        parse_model(models.Page[models.Token]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def rotate_token(token_id: str) -> Call[TokenCreated]:
    """``POST /v1/tokens/{id}:rotate``: its successor with a new secret; the old is revoked."""
    return Call("POST", f"/v1/tokens/{segment(token_id)}:rotate", parse_model(TokenCreated))


def revoke_token(token_id: str) -> Call[models.Token]:
    """``DELETE /v1/tokens/{id}``: answers the revoked token."""
    return Call(
        "DELETE", f"/v1/tokens/{segment(token_id)}", parse_model(models.Token), retry_safe=True
    )


def current_project() -> Call[models.Project]:
    """``GET /v1/projects/current``: the token's project."""
    return Call("GET", "/v1/projects/current", parse_model(models.Project), retry_safe=True)


def create_project(name: str) -> Call[ProjectCreated]:
    """``POST /v1/projects``: a new project and its first admin token."""
    return Call("POST", "/v1/projects", parse_model(ProjectCreated), json={"name": name})


def health() -> Call[dict[str, Any]]:
    """``GET /v1/healthz``: liveness (no token needed)."""
    return Call("GET", "/v1/healthz", parse_typed(dict[str, Any]), retry_safe=True)


# -- events ----------------------------------------------------------------------------
def stream_events(after: int | None) -> Call[None]:
    """``GET /v1/events``: Server-Sent Events after event `after` (from now on when None).

    The answer is read as a stream by `oprun.sdk.events`, never parsed whole.
    """
    return Call("GET", "/v1/events", parse_nothing, params={"after": after}, retry_safe=True)
