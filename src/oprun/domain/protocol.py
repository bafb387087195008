"""The messages between worker agents and the server.

Every report names the session action and the lease epoch it was issued under;
a report whose epoch is not the current one is refused (fencing).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from oprun.domain.limits import (
    MAX_CAPABILITIES,
    MAX_CLAIM,
    MAX_HELD,
    MAX_LOG_LINE_BYTES,
    MAX_TAGS,
    MAX_WAIT_SECONDS,
    MAX_WORKER_ACTIONS,
    MAX_WORKER_QUEUES,
)
from oprun.domain.models import ActionDefinition, Input, Model, QueueName
from oprun.domain.text import INT32_MAX


class WorkerRegistration(Input):
    """A worker announcing itself."""

    name: str = Field(min_length=1, max_length=128)
    hostname: str = Field(max_length=255)
    queues: list[QueueName] = Field(
        default_factory=lambda: ["default"], min_length=1, max_length=MAX_WORKER_QUEUES
    )
    capabilities: dict[str, Any] = Field(default_factory=dict, max_length=MAX_CAPABILITIES)
    actions: list[ActionDefinition] = Field(
        default_factory=list,
        max_length=MAX_WORKER_ACTIONS,
        description="actions this worker serves, registered on the way in",
    )

    @field_validator("capabilities")
    @classmethod
    def _few_tags(cls, capabilities: dict[str, Any]) -> dict[str, Any]:
        tags = capabilities.get("tags")
        if isinstance(tags, list) and len(tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags")
        return capabilities


class ClaimRequest(Input):
    """Ask for up to `max` tasks, waiting up to `wait` seconds for one to arrive.

    With `operation_id` only that operation's tasks are taken (a session asking for
    more of its operation's work), tasks of `step_id` first; with `session_id` their
    session actions join that open session of this worker.
    """

    max: int = Field(default=1, ge=1, le=MAX_CLAIM)
    wait: float = Field(default=0.0, ge=0, le=MAX_WAIT_SECONDS)
    operation_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    step_id: str | None = Field(default=None, max_length=128)


class Assignment(Model):
    """One task given to a worker: what to run and the lease it runs under."""

    session_action_id: str
    lease_epoch: int
    lease_seconds: float
    operation_id: str
    task_id: str
    action: ActionDefinition
    parameters: dict[str, Any] = Field(
        description="the task's parameters (for openjd actions, Deadline's tagged union)"
    )
    attempt: int
    timeout: float | None
    session_id: str = ""
    step_id: str = "main"
    operation_parameters: dict[str, Any] = Field(
        default_factory=dict, description="the operation's (job's) parameters"
    )


class ClaimResponse(Model):
    """What a claim returns."""

    assignments: list[Assignment]
    stop: bool = Field(default=False, description="the server tells this worker to stop")


class Held(Input):
    """A session action a worker still holds, with the epoch it holds it under."""

    session_action_id: str
    lease_epoch: int


class Heartbeat(Input):
    """A worker's sign of life; renews the leases of what it holds."""

    held: list[Held] = Field(default_factory=list, max_length=MAX_HELD)
    status: Literal["RUNNING", "IDLE", "STOPPING", "STOPPED"] = "RUNNING"


class HeartbeatResponse(Model):
    """Which held work to cancel and which the worker no longer owns."""

    cancel: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list, description="leases lapsed or superseded")
    lease_seconds: float
    stop: bool = False


ReportKind = Literal["running", "progress", "log", "succeeded", "failed", "canceled", "released"]


ExitCode = Field(default=None, ge=-INT32_MAX - 1, le=INT32_MAX)


class Report(Input):
    """One thing that happened to a held session action.

    Its text is an action's output: a NUL or a lone surrogate in it is kept escaped
    (`oprun.domain.text.escape`), never refused, and text longer than its field's limit
    once escaped is cut to it (a log line to `MAX_LOG_LINE_BYTES` bytes).
    """

    action_output = True
    line_bytes = {"lines": MAX_LOG_LINE_BYTES}

    session_action_id: str
    lease_epoch: int
    kind: ReportKind
    percent: float | None = Field(default=None, ge=0, le=100)
    message: str | None = Field(default=None, max_length=4096)
    step_code: str | None = Field(default=None, max_length=64)
    lines: list[str] = Field(default_factory=list, max_length=10_000)
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    result: Any = None
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=16_384)
    exit_code: int | None = ExitCode


SESSION_ACTION_ID = r"^sa_[0-9a-f]{32}$"


class SessionReport(Input):
    """A session action the worker ran for a session as a whole, not for one task.

    Environment enter and exit (`envEnter` / `envExit`) and input sync
    (`syncInputJobAttachments`). The worker names the session action (a new id the
    first time) and reports each status it reaches; no lease: the session's tasks
    hold the leases, and once the session is ended nothing more is accepted for it.
    Its text is kept escaped and cut to its limits, as a `Report`'s.
    """

    action_output = True
    line_bytes = {"lines": MAX_LOG_LINE_BYTES}

    session_id: str = Field(max_length=64)
    session_action_id: str = Field(pattern=SESSION_ACTION_ID)
    definition: dict[str, dict[str, Any]] = Field(
        description='`{"envEnter": {"environmentId": name}}`, `{"envExit": ...}` or '
        '`{"syncInputJobAttachments": {}}`'
    )
    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "INTERRUPTED"]
    exit_code: int | None = ExitCode
    message: str | None = Field(default=None, max_length=4096)
    lines: list[str] = Field(default_factory=list, max_length=10_000)
    stream: Literal["stdout", "stderr", "system"] = "stdout"


class ReportBatch(Input):
    """Reports from one worker, applied in order."""

    reports: list[Report] = Field(default_factory=list, max_length=5_000)
    sessions: list[SessionReport] = Field(default_factory=list, max_length=1_000)
    ended_sessions: list[str] = Field(
        default_factory=list, max_length=1_000, description="sessions the worker has closed"
    )


class ReportOutcome(Model):
    """What became of one report: accepted, or refused with a reason."""

    session_action_id: str
    accepted: bool
    reason: str | None = None


class ReportBatchResponse(Model):
    """The outcome of each report, in order."""

    outcomes: list[ReportOutcome]
    session_outcomes: list[ReportOutcome] = Field(default_factory=list)
