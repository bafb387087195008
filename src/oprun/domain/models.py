"""The records of oprun, as the API sends them and the SDK reads them."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from oprun.domain.backoff import backoff
from oprun.domain.limits import (
    MAX_ACTION_PARAMETERS,
    MAX_BULK_INVOKE,
    MAX_COMMAND_ARGS,
    MAX_NAME_LENGTH,
    MAX_TAGS,
)
from oprun.domain.params import ParameterSpec
from oprun.domain.roles import Role
from oprun.domain.status import OperationStatus, SessionActionStatus, WorkerStatus
from oprun.domain.text import INT32_MAX, Storable

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
QueueName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
]
"""A queue's name, held to one rule wherever it comes in: an invocation, an action's
definition, a worker's registration and `PUT /v1/queues/{name}`."""


class Model(BaseModel):
    """Base of every record the server sends: immutable; fields a newer server adds are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Input(Storable):
    """Base of everything a client sends: immutable; an unknown field is an error.

    Every field, however deep, holds to `oprun.domain.text`'s rule (no NUL or lone
    surrogate, integers within 64 bits, finite numbers, no boolean for a number) or is
    a 400 naming it; an `action_output` model keeps such text escaped instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(Model):
    """A tenancy boundary: every resource belongs to exactly one project."""

    id: str
    name: str
    created_at: datetime


class Token(Model):
    """An API credential scoped to one project with one role (the secret is never stored)."""

    id: str
    project_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    """After this the token answers 401 (none: it lives until revoked)."""
    last_used_at: datetime | None = None
    """When it last authenticated a request, to the minute (none: never used)."""


class Queue(Model):
    """A named lane in a project where work waits for workers."""

    id: str
    project_id: str
    name: str
    priority: int = 0
    max_concurrency: int | None = None
    created_at: datetime


class QueueSettings(Input):
    """What a client sends to configure a queue."""

    priority: int = Field(
        default=0, ge=-1000, le=1000, description="higher-priority queues are served first"
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, le=1_000_000, description="most of its tasks running at once"
    )


class QueueStats(Model):
    """A queue as it is now: work waiting and running, and what ended in the last hour."""

    name: str
    priority: int = 0
    max_concurrency: int | None = None
    depth: int = Field(description="tasks waiting (QUEUED)")
    running: int = Field(description="tasks SCHEDULED, RUNNING or CANCELING")
    succeeded: int = Field(description="tasks that succeeded in the last hour")
    failed: int = Field(description="tasks that failed in the last hour")
    throughput: list[int] = Field(
        description="tasks that ended (succeeded, failed or canceled) in each of the last "
        "60 minutes, oldest first; the last entry is the current minute"
    )
    at: datetime = Field(description="the store's clock when these were counted")


class ActionKind(StrEnum):
    """How an action's work is executed."""

    PYTHON = "python"
    OPENJD = "openjd"


class RetryPolicy(Input):
    """When a failed attempt runs again, and after how long.

    Interrupted attempts (the worker died, stopped answering or was drained) always
    run again while attempts remain. A failure the action reports runs again only
    when its error code is in `retry_on` (`"*"` for every code).
    """

    retry_on: list[str] = Field(
        default_factory=lambda: ["CRASHED"],
        max_length=64,
        description="error codes that are retried; `*` retries every failure",
    )
    backoff_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="delay before the second attempt"
    )
    backoff_max_seconds: float = Field(
        default=300.0, ge=0, le=86_400, description="the delay doubles per attempt up to this"
    )

    def retries(self, error_code: str | None) -> bool:
        """Whether a failure with this error code is retried."""
        return "*" in self.retry_on or (error_code or "FAILED") in self.retry_on

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds to wait before the attempt after `attempt` (1-based).

        Exponential (`backoff_seconds` doubling per attempt, at most
        `backoff_max_seconds`) with "equal jitter": `jitter` in [0, 1) keeps between
        half and all of it, so retries of many tasks failed together spread out.
        """
        return backoff(attempt - 1, self.backoff_seconds, self.backoff_max_seconds, jitter)


class Requirements(Input):
    """What a worker must have to run an action (matched against its capabilities)."""

    cpus: float = Field(default=0, ge=0)
    memory_mb: float = Field(default=0, ge=0)
    gpus: float = Field(default=0, ge=0)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)

    def is_empty(self) -> bool:
        """Whether any worker qualifies."""
        return not (self.cpus or self.memory_mb or self.gpus or self.tags)

    def satisfied_by(self, capabilities: dict[str, Any]) -> bool:
        """Whether a worker with these capabilities (`cpus`, `memory_mb`, `gpus`, `tags`) fits."""
        for amount in ("cpus", "memory_mb", "gpus"):
            needed = getattr(self, amount)
            if needed:
                have = capabilities.get(amount, 0)
                if not isinstance(have, int | float) or have < needed:
                    return False
        tags = capabilities.get("tags", [])
        return all(tag in tags for tag in self.tags) if isinstance(tags, list) else not self.tags


class ActionDefinition(Input):
    """What a client sends to define (a new version of) an action."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
    kind: ActionKind = ActionKind.PYTHON
    entrypoint: str | None = Field(
        default=None, description="`package.module:function` for python actions"
    )
    template: dict[str, Any] | str | None = Field(
        default=None,
        description="openjd actions: an Open Job Description job template (2023-09), as an "
        "object or as YAML or JSON text; saved as an object",
    )
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_COMMAND_ARGS,
        description="openjd actions: shorthand for a one-step template running this argv",
    )
    parameters: list[ParameterSpec] = Field(default_factory=list, max_length=MAX_ACTION_PARAMETERS)
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt")
    queue: QueueName = "default"
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    requirements: Requirements = Field(default_factory=Requirements)
    quarantine_after: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="failures in a row of one operation's tasks on one worker before that "
        "worker takes no more of them (0: never)",
    )
    cacheable: bool = False
    description: str = Field(default="", max_length=4096)

    def digest(self) -> str:
        """Content digest of the definition: equal definitions have equal digests."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class Action(Model):
    """One immutable saved version of an action."""

    id: str
    version_id: str
    project_id: str
    name: str
    version: int
    latest_version: int
    digest: str
    definition: ActionDefinition
    created_at: datetime


class TaskCounts(Model):
    """How many of an operation's tasks are in each group of statuses."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0


class Progress(Model):
    """How far an operation has come."""

    percent: float | None = None
    message: str | None = None
    counts: TaskCounts = Field(default_factory=TaskCounts)


class StatusRecord(Model):
    """One entry of a status history."""

    status: str
    at: datetime
    detail: str | None = None


class InvocationSource(StrEnum):
    """How an invocation was started."""

    MANUAL = "Manual"
    TRIGGER = "Trigger"
    SCHEDULE = "Schedule"
    RETRY = "Retry"


class ActionProvenance(Model):
    """Which action version an operation runs."""

    name: str
    version: int
    digest: str
    project_id: str


class SourceProvenance(Model):
    """Who or what started an operation."""

    source_type: InvocationSource = InvocationSource.MANUAL
    source_id: str


class Provenance(Model):
    """Where an operation comes from."""

    action: ActionProvenance
    source: SourceProvenance


class OperationError(Model):
    """Why an operation failed."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Operation(Model):
    """One invocation of one action version: the durable record users follow."""

    id: str
    project_id: str
    kind: str = Field(description="the action's name")
    action_id: str
    action_version: int
    queue: str
    status: OperationStatus
    step_code: str | None = None
    progress: Progress = Field(default_factory=Progress)
    parameters: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: OperationError | None = None
    exit_reason: str | None = None
    created_by: str
    idempotency_key: str | None = None
    timeout: float | None = None
    attempts: int = 0
    max_attempts: int = 1
    worker_id: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    provenance: Provenance
    history: list[StatusRecord] = Field(default_factory=list)


class Task(Model):
    """One unit of an operation's work (one task per operation until steps expand)."""

    id: str
    operation_id: str
    project_id: str
    step_id: str
    status: OperationStatus
    parameters: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 1
    created_at: datetime
    updated_at: datetime


class SessionAction(Model):
    """One attempt of one unit of work on one worker (Deadline's session action)."""

    id: str
    session_id: str
    operation_id: str
    task_id: str | None
    worker_id: str
    status: SessionActionStatus
    lease_epoch: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_updated_at: datetime | None = None
    progress_percent: float | None = None
    progress_message: str | None = None
    process_exit_code: int | None = None
    definition: dict[str, Any]
    history: list[StatusRecord] = Field(default_factory=list)


class Worker(Model):
    """A registered worker agent."""

    id: str
    project_id: str
    name: str
    hostname: str
    status: WorkerStatus
    queues: list[str]
    capabilities: dict[str, Any] = Field(default_factory=dict)
    last_heartbeat_at: datetime | None = None
    created_at: datetime


class Event(Model):
    """One state change, as streamed to clients."""

    id: int
    project_id: str
    type: str
    entity_id: str
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class LogRecord(Model):
    """One line of an operation's log."""

    seq: int
    operation_id: str
    session_action_id: str | None = None
    at: datetime
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    line: str


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back to get the next one."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = None


class Invocation(Input):
    """A request to run an action: what creates an operation."""

    action: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    version: int | None = Field(default=None, ge=1, le=INT32_MAX, description="latest when omitted")
    action_digest: str | None = Field(
        default=None,
        max_length=128,
        description="run only if the version invoked has this digest (409 CONFLICT otherwise)",
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    timeout: float | None = Field(default=None, gt=0, description="seconds for the whole operation")
    queue: QueueName | None = None


class BulkInvocation(Input):
    """Many invocations in one request."""

    invocations: list[Invocation] = Field(min_length=1, max_length=MAX_BULK_INVOKE)


class BulkInvocationResult(Model):
    """The operations a bulk invocation created or found (`None` for a cacheable no-op)."""

    operations: list[Operation | None]


class BulkInvocationIds(Model):
    """A bulk invocation's answer asked with ``Prefer: return=minimal``: ids, not records.

    One per invocation, in order; `None` for a cacheable no-op.
    """

    ids: list[str | None]


class TokenCreate(Input):
    """A token to create."""

    name: str = Field(min_length=1, max_length=128)
    role: Role
    expires_in: float | None = Field(
        default=None,
        gt=0,
        le=100 * 365 * 86400,
        description="seconds until the token expires (none: it lives until revoked)",
    )


class TokenCreated(Model):
    """A created token and its secret, shown only here."""

    token: Token
    secret: str


class ProjectCreate(Input):
    """A project to create."""

    name: str = Field(min_length=1, max_length=128)


class ProjectCreated(Model):
    """A created project and the secret of its first admin token."""

    project: Project
    token: str
