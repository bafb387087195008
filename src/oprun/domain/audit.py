"""The audit log's records: who did what security-relevant thing, from where.

An `AuditEntry` is what a use case asks the store to record (in the transaction of the
change it describes); an `AuditRecord` is a stored row as the API answers it. Neither
ever holds a secret: no token value, and not the text of a token that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from oprun.domain.models import Model
from oprun.domain.roles import Role


class AuditKind(StrEnum):
    """What happened."""

    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    TOKEN_ROTATED = "token.rotated"
    ACTION_SAVED = "action.saved"
    QUEUE_CONFIGURED = "queue.configured"
    PROJECT_CREATED = "project.created"
    RETENTION_CHANGED = "retention.changed"
    AUTH_FAILED = "auth.failed"


@dataclass(frozen=True)
class AuditEntry:
    """A row to record: its project (None: server-level), kind, actor and request.

    The actor is the token that acted (None: nobody authenticated, e.g. the server's
    own bootstrap); `client` is the connection's peer address, `request_id` the
    request's `X-Request-ID`. The store adds `at` from its clock, and may fill in
    `subject` and `details` it only learns in the transaction (a new token's id).
    """

    kind: AuditKind
    project_id: str | None
    actor_id: str | None = None
    actor_name: str | None = None
    actor_role: Role | None = None
    client: str | None = None
    request_id: str | None = None
    subject: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def about(
        self, subject: str | None, project_id: str | None = None, **details: Any
    ) -> AuditEntry:
        """A copy naming its `subject`, with more `details` (and another project)."""
        return replace(
            self,
            subject=subject,
            project_id=self.project_id if project_id is None else project_id,
            details={**self.details, **details},
        )

    def as_kind(self, kind: AuditKind) -> AuditEntry:
        """The same actor and request, recording another kind of event."""
        return replace(self, kind=kind, subject=None, details={})


class AuditActor(Model):
    """The token that acted, as it was then."""

    token_id: str
    name: str | None = None
    role: Role | None = None


class AuditRecord(Model):
    """One row of the audit log (`GET /v1/audit`)."""

    id: int
    at: datetime
    """When, by the database's clock."""
    project_id: str | None
    """None: a server-level event (a failed authentication whose token matches nothing)."""
    kind: str
    """`token.created`, `token.revoked`, `token.rotated`, `action.saved`,
    `queue.configured`, `project.created`, `retention.changed` or `auth.failed`."""
    actor: AuditActor | None = None
    """The token that acted; None when nobody authenticated."""
    client: str | None = None
    """The peer address of the connection (never `X-Forwarded-For`)."""
    request_id: str | None = None
    """The request's `X-Request-ID`, as in the server's log lines."""
    subject: str | None = None
    """What it was about: a token id, an action or queue name, a project id."""
    details: dict[str, Any] = {}
