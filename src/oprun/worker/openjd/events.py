"""What an `OpenJDSession` reports: action events, their outcomes, and output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oprun.domain.session_kinds import RunnableKind

OutcomeStatus = Literal["SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"]


@dataclass(frozen=True)
class ActionOutcome:
    """How one session action (environment enter/exit or task run) ended."""

    status: OutcomeStatus
    exit_code: int | None = None
    """The exit code of the action's process, when it ran to an exit."""
    message: str | None = None
    """The action's `openjd_fail:` message, or a description of what happened."""
    progress: float | None = None
    """The last `openjd_progress:` percentage the action reported."""

    @property
    def succeeded(self) -> bool:
        """Whether the action succeeded."""
        return self.status == "SUCCEEDED"


@dataclass(frozen=True)
class ActionEvent:
    """A session action started or ended.

    `environment` names the environment for `envEnter`/`envExit` (None for a
    task run); `step` is the step of a step environment or task (None for a job
    environment). An `ended` event carries the `outcome`.
    """

    kind: RunnableKind
    environment: str | None
    phase: Literal["started", "ended"]
    step: str | None = None
    outcome: ActionOutcome | None = None


@dataclass(frozen=True)
class OutputEvent:
    """Output of the running action.

    - `kind="log"`: `lines` from `stream` `"output"` (what the action printed on
      stdout and stderr, which openjd-sessions merges) or `"session"` (openjd's own
      lines: section banners, the command run, its exit code);
    - `kind="progress"`: `percent` from an `openjd_progress:` line;
    - `kind="status"`: `message` from an `openjd_status:` line.
    """

    kind: Literal["log", "progress", "status"]
    lines: tuple[str, ...] = ()
    stream: Literal["output", "session"] | None = None
    percent: float | None = None
    message: str | None = None
