"""The OpenJD executor: an `OpenJDExecution` runs an operation's tasks in one session.

One execution is one worker session of an OpenJD operation. It starts with the
assignment that opened it, syncs its inputs (a no-op until datasets arrive), and
runs the task in an `OpenJDSession`, which enters the job and step environments
first. After each task it asks the server for more of
the same operation's tasks (same step first) for this session, so environments
are entered once per session, not once per task. When there is no more work, or
the worker stops, it exits the environments and closes the session.

Each environment enter/exit is reported as a session-level session action;
each task's output, `openjd_progress:` and `openjd_status:` lines become its
reports, and its outcome (`openjd_fail:` as the message) its terminal report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal

from oprun.domain.escaping import fit
from oprun.domain.ids import new_id
from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.domain.protocol import Assignment, SessionReport
from oprun.worker.executor import NextTask, StopReason
from oprun.worker.openjd.events import ActionEvent, ActionOutcome, OutputEvent
from oprun.worker.openjd.session import OpenJDSession
from oprun.worker.reports import ReportBatcher, Stream

log = logging.getLogger("oprun.worker.openjd")

MAX_MESSAGE_CHARS = 4096
"""A report's `message` limit: longer text is cut, escaped, to it."""
MAX_ERROR_MESSAGE_CHARS = 16_384
"""A report's `error_message` limit."""

SessionStatus = Literal["RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "INTERRUPTED"]
_STATUS: dict[str, SessionStatus] = {
    "SUCCEEDED": "SUCCEEDED",
    "FAILED": "FAILED",
    "TIMEOUT": "FAILED",
    "CANCELED": "CANCELED",
}


class OpenJDExecutor:
    """Runs OpenJD assignments: each opens a session that runs more of its operation's tasks."""

    def __init__(self, reports: ReportBatcher, *, grace: float, workdir: Path) -> None:
        """Report to `reports`; `grace` caps a cancel's notify period (seconds).

        Each session gets its working directory under `workdir`.
        """
        self._reports = reports
        self._grace = grace
        self._workdir = workdir

    def execution(self, assignment: Assignment, next_task: NextTask) -> OpenJDExecution:
        """The session that `assignment` opens; it asks `next_task` for more work."""
        return OpenJDExecution(
            assignment, self._reports, next_task, grace=self._grace, workdir=self._workdir
        )

    def drain(self) -> None:
        """Nothing to do: a session ends with its work."""

    async def close(self) -> None:
        """Nothing to do: no session outlives its work."""


class OpenJDExecution:
    """Runs the tasks of one operation in one OpenJD session on this worker (an `Execution`)."""

    def __init__(
        self,
        assignment: Assignment,
        reports: ReportBatcher,
        next_task: NextTask,
        *,
        grace: float,
        workdir: Path,
    ) -> None:
        """Prepare to run `assignment` and whatever more of its operation `next_task` gives."""
        self.assignment = assignment
        self._reports = reports
        self._next_task = next_task
        self._grace = grace
        self._workdir = workdir / assignment.session_id
        self._session: OpenJDSession | None = None
        self._env: tuple[str, dict[str, dict[str, str]]] | None = None  # running env action
        self.reason: StopReason | None = None
        self.tasks_run = 0

    @property
    def session_action_id(self) -> str:
        """The task session action running now."""
        return self.assignment.session_action_id

    def stop(self, reason: StopReason, *, grace: float | None = None) -> None:
        """Stop the running task (and the session after it); LOST kills everything at once."""
        if reason is StopReason.LOST:
            self._reports.discard(self.session_action_id)
        if self.reason is None or reason is StopReason.LOST:
            self.reason = reason
        session = self._session
        if session is None:
            return
        if reason is StopReason.LOST:
            _spawn(session.kill())
        else:
            _spawn(session.cancel(self._grace if grace is None else grace))

    async def run(self) -> None:
        """Run tasks until there are no more for this session, then close it."""
        a = self.assignment
        if self.reason is not None:  # stopped before it started: no session to open
            self._end_stopped()
            if self.reason is not StopReason.LOST:
                self._reports.end_session(a.session_id)
            return
        template = a.action.template
        if not isinstance(template, dict):
            self._fail("NO_TEMPLATE", f"action {a.action.name!r} has no job template")
            return
        self._workdir.mkdir(parents=True, exist_ok=True)
        session = OpenJDSession(
            session_id=a.session_id,
            template=template,
            job_parameters=a.operation_parameters,
            workdir=self._workdir,
            on_action=self._on_action,
            on_output=self._on_output,
        )
        self._session = session
        try:
            await session.start()
            self._session_action({"syncInputJobAttachments": {}}, "SUCCEEDED")  # no datasets yet
            current: Assignment | None = a
            while current is not None:
                self.assignment = current
                if self.reason is not None:
                    self._end_stopped()
                    break
                outcome = await session.run_task(
                    current.step_id, current.parameters, timeout=current.timeout
                )
                self.tasks_run += 1
                self._report(outcome)
                if self.reason is not None or not outcome.succeeded:
                    break
                current = await self._next_task(current)
            if self.reason is StopReason.LOST:
                await session.kill()
            else:
                await session.end()
        except Exception as exc:
            log.exception("session_error session_id=%s", a.session_id)
            if self.reason is not StopReason.LOST:
                self._fail(
                    "WORKER_ERROR", f"the OpenJD session failed: {type(exc).__name__}: {exc}"
                )
            await session.kill()
        finally:
            if self.reason is not StopReason.LOST:
                self._reports.end_session(a.session_id)

    # -- outcomes --------------------------------------------------------------------------
    def _report(self, outcome: ActionOutcome) -> None:
        a = self.assignment
        sa, epoch = a.session_action_id, a.lease_epoch
        reason = self.reason
        if reason is StopReason.LOST:
            return
        if outcome.status == "SUCCEEDED":
            self._reports.add(sa, epoch, "succeeded", exit_code=outcome.exit_code)
        elif outcome.status == "CANCELED" and reason is StopReason.RELEASED:
            self._reports.add(sa, epoch, "released")
        elif outcome.status == "CANCELED" and reason is StopReason.CANCELED:
            self._reports.add(sa, epoch, "canceled", exit_code=outcome.exit_code)
        elif outcome.status == "TIMEOUT":
            self._fail("TIMEOUT", outcome.message or "the task ran past its timeout", outcome)
        else:
            code = "EXIT" if outcome.exit_code not in (None, 0) else "FAILED"
            self._fail(code, outcome.message or f"the task {outcome.status.lower()}", outcome)

    def _end_stopped(self) -> None:
        a = self.assignment
        if self.reason is StopReason.RELEASED:
            self._reports.add(a.session_action_id, a.lease_epoch, "released")
        elif self.reason is StopReason.CANCELED:
            self._reports.add(a.session_action_id, a.lease_epoch, "canceled")

    def _fail(self, code: str, message: str, outcome: ActionOutcome | None = None) -> None:
        a = self.assignment
        self._reports.add(
            a.session_action_id,
            a.lease_epoch,
            "failed",
            error_code=code,
            error_message=fit(message, chars=MAX_ERROR_MESSAGE_CHARS),
            exit_code=outcome.exit_code if outcome else None,
        )

    # -- events from the session ----------------------------------------------------------
    def _on_action(self, event: ActionEvent) -> None:
        if self.reason is StopReason.LOST:
            return
        a = self.assignment
        if event.kind == "taskRun":
            if event.phase == "started":
                self._reports.add(a.session_action_id, a.lease_epoch, "running")
            return
        definition: dict[str, dict[str, str]] = {
            event.kind: {"environmentId": event.environment or ""}
        }
        if event.phase == "started":
            self._env = (new_id("session_action"), definition)
            self._session_action(definition, "RUNNING", self._env[0])
            return
        sa_id = self._env[0] if self._env is not None else new_id("session_action")
        self._env = None
        outcome = event.outcome
        status = _STATUS.get(outcome.status, "CANCELED") if outcome else "FAILED"
        self._session_action(
            definition,
            status,
            sa_id,
            exit_code=outcome.exit_code if outcome else None,
            message=outcome.message if outcome else None,
        )

    def _on_output(self, event: OutputEvent) -> None:
        if self.reason is StopReason.LOST:
            return
        a = self.assignment
        sa, epoch = a.session_action_id, a.lease_epoch
        if event.kind == "progress":
            self._reports.progress(sa, epoch, percent=event.percent)
        elif event.kind == "status":
            self._reports.progress(
                sa, epoch, message=fit(event.message or "", chars=MAX_MESSAGE_CHARS)
            )
        elif event.lines:
            stream: Stream = "stdout" if event.stream == "output" else "system"
            lines = [fit(line, utf8_bytes=MAX_LOG_LINE_BYTES) for line in event.lines]
            env = self._env
            if env is not None and "envExit" in env[1]:
                # Environments exit after the last task's outcome: their output is theirs.
                self._session_action(env[1], "RUNNING", env[0], lines=lines, stream=stream)
            else:
                self._reports.log(sa, epoch, lines, stream)

    def _session_action(
        self,
        definition: dict[str, dict[str, str]],
        status: SessionStatus,
        sa_id: str | None = None,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        lines: list[str] | None = None,
        stream: Stream = "stdout",
    ) -> None:
        self._reports.session(
            SessionReport(
                session_id=self.assignment.session_id,
                session_action_id=sa_id or new_id("session_action"),
                definition=definition,
                status=status,
                exit_code=exit_code,
                message=fit(message, chars=MAX_MESSAGE_CHARS) if message else None,
                lines=lines or [],
                stream=stream,
            )
        )


_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run a stop in the background, keeping a reference so it is not collected."""
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
