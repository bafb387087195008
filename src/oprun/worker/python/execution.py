"""The python executor: a pool of child processes, and a task's run on one of them.

`PythonExecutor` keeps the pool; each `PythonExecution` runs one assignment on a
child of it, the child's events turned into reports. A child is reused for task
after task; one that was canceled, killed or died is discarded, and a fresh one
started on demand.

The outcome reported is what happened: the child's own outcome when it gave
one, else why the worker stopped it (`canceled`, `TIMEOUT`, `released`), else
a crash (`CRASHED` with the exit code). Work the worker lost is killed and
nothing more is reported for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from oprun.context import MAX_MESSAGE_CHARS, MAX_STEP_CODE_CHARS
from oprun.domain.escaping import fit
from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.domain.protocol import Assignment
from oprun.worker.executor import NextTask, StopReason
from oprun.worker.python.process import ChildEvent, ChildProcess, Exited, OutputLine, TaskSpec
from oprun.worker.reports import ReportBatcher

log = logging.getLogger("oprun.worker.python.execution")

MAX_ERROR_MESSAGE_CHARS = 16_384


class PythonExecutor:
    """Runs python assignments, one at a time per child, over a pool of reusable children."""

    def __init__(self, reports: ReportBatcher, *, grace: float, workdir: Path) -> None:
        """Report to `reports`; `grace` is the SIGTERM-to-SIGKILL delay of a cancel.

        Each task gets `input` and `output` directories under `workdir`.
        """
        self._reports = reports
        self._grace = grace
        self._workdir = workdir
        self._idle: list[ChildProcess] = []
        self._draining = False
        self._seq = 0
        self.restarts = 0
        """Children started to replace one that died or could not be used again."""
        self._lost = 0

    def execution(self, assignment: Assignment, next_task: NextTask) -> PythonExecution:
        """The execution of `assignment` (a python task runs alone: `next_task` is unused)."""
        self._seq += 1
        return PythonExecution(
            assignment, self._reports, self, seq=self._seq, grace=self._grace, workdir=self._workdir
        )

    def drain(self) -> None:
        """The worker is stopping: children that finish a task are closed, not kept."""
        self._draining = True

    async def close(self) -> None:
        """Close the idle children."""
        children, self._idle = self._idle, []
        results: list[Any] = await asyncio.gather(
            *(c.close() for c in children), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.warning("child_close_failed error=%s", result)

    async def acquire(self) -> ChildProcess:
        """An idle child that is still alive, or a new one."""
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            self._lost += 1
            await child.close()
        if self._lost:
            self._lost -= 1
            self.restarts += 1
        child = ChildProcess()
        await child.start()
        return child

    async def give_back(self, child: ChildProcess, *, reusable: bool) -> None:
        """Keep `child` for the next task, or close it."""
        if reusable and not self._draining:
            self._idle.append(child)
        else:
            if not self._draining:
                self._lost += 1  # the next task starts a child in its place
            await child.close()


class PythonExecution:
    """Runs one assignment on a child of its executor's pool (an `Execution`)."""

    def __init__(
        self,
        assignment: Assignment,
        reports: ReportBatcher,
        pool: PythonExecutor,
        *,
        seq: int,
        grace: float,
        workdir: Path,
    ) -> None:
        """Prepare to run `assignment`; `grace` is the SIGTERM-to-SIGKILL delay of a cancel."""
        self.assignment = assignment
        self._reports = reports
        self._pool = pool
        self._seq = seq
        self._grace = grace
        self._dir = workdir / assignment.session_action_id
        self._child: ChildProcess | None = None
        self._stoppers: list[asyncio.Task[None]] = []
        self._ended = False
        self.reason: StopReason | None = None

    @property
    def session_action_id(self) -> str:
        """The session action being run."""
        return self.assignment.session_action_id

    def stop(self, reason: StopReason, *, grace: float | None = None) -> None:
        """Stop the task: cancel its child (SIGTERM, SIGKILL after `grace`), or kill it.

        The first reason is the one reported, except `LOST`, which overrides
        any other (the work is killed at once and nothing more is reported).
        A `grace` of 0 kills at once.
        """
        if reason is StopReason.LOST:
            self._reports.discard(self.session_action_id)
        if self.reason is None or reason is StopReason.LOST:
            if self.reason is None and reason is not StopReason.LOST and not self._ended:
                grace_used = self._grace if grace is None else grace
                self._system(_stop_line(reason, grace_used, started=self._child is not None))
            self.reason = reason
        if self._child is None or self._ended:
            return
        grace = self._grace if grace is None else grace
        if reason is StopReason.LOST or grace <= 0:
            self._stoppers.append(asyncio.create_task(self._child.kill()))
        elif not self._stoppers:
            self._stoppers.append(asyncio.create_task(self._child.cancel(grace)))

    async def run(self) -> None:
        """Run the task on a child of the pool until it ends, then give the child back."""
        if self.reason is not None:  # stopped before it started: no child needed to say so
            self._end_stopped(None)
            return
        child = await self._pool.acquire()
        reusable = False
        try:
            reusable = await self._run_on(child)
        finally:
            await self._pool.give_back(child, reusable=reusable)

    async def _run_on(self, child: ChildProcess) -> bool:
        """Run the task on `child` until it ends; returns whether `child` may be reused."""
        a = self.assignment
        if self.reason is not None:
            self._end_stopped(None)
            return child.alive
        if a.action.entrypoint is None:
            self._fail("NO_ENTRYPOINT", f"action {a.action.name!r} has no python entrypoint")
            return child.alive
        self._child = child
        spec = TaskSpec(
            seq=self._seq,
            entrypoint=a.action.entrypoint,
            parameters=a.parameters,
            path_parameters=tuple(p.name for p in a.action.parameters if p.type == "path"),
            operation_id=a.operation_id,
            task_id=a.task_id,
            session_action_id=a.session_action_id,
            attempt=a.attempt,
            # Strings joined here: two more pathlib joins cost as much as the rest of a start.
            input_dir=f"{self._dir}{os.sep}input",
            output_dir=f"{self._dir}{os.sep}output",
        )
        try:
            await child.run(spec)
            await self._follow(child)
            for stopper in self._stoppers:
                await stopper
        finally:
            self._ended = True
            await self._clean_up()
        return self.reason is None and child.alive

    async def _follow(self, child: ChildProcess) -> None:
        loop = asyncio.get_running_loop()
        deadline = (
            None if self.assignment.timeout is None else loop.time() + self.assignment.timeout
        )
        while True:
            if deadline is None or self.reason is not None:
                item = await child.next_item()
            else:
                try:
                    item = await asyncio.wait_for(child.next_item(), deadline - loop.time())
                except TimeoutError:
                    self.stop(StopReason.TIMEOUT)
                    continue
            if isinstance(item, OutputLine):
                self._log([item.line], "stdout")
            elif isinstance(item, Exited):
                self._end_stopped(item.returncode)
                return
            elif item.terminal:
                self._end_with(item)
                return
            else:
                self._on_event(item)

    def _on_event(self, event: ChildEvent) -> None:
        data = event.data
        if self.reason is StopReason.LOST:
            return
        sa, epoch = self.session_action_id, self.assignment.lease_epoch
        if event.kind == "running":
            self._reports.add(sa, epoch, "running")
        elif event.kind == "progress":
            percent = data.get("percent")
            message = data.get("message")
            self._reports.progress(
                sa,
                epoch,
                percent=float(percent) if isinstance(percent, int | float) else None,
                message=fit(str(message), chars=MAX_MESSAGE_CHARS) if message is not None else None,
            )
        elif event.kind == "step":
            code = fit(str(data.get("code")), chars=MAX_STEP_CODE_CHARS)
            self._reports.progress(sa, epoch, step_code=code)
        elif event.kind == "log":
            self._log([str(data.get("line", ""))], "stdout")
        else:
            log.debug("child_event_unknown event=%s", event.kind)

    def _end_with(self, event: ChildEvent) -> None:
        """The child gave the task's outcome."""
        data = event.data
        if self.reason is StopReason.LOST:
            return
        if event.kind == "succeeded":
            self._reports.add(
                self.session_action_id,
                self.assignment.lease_epoch,
                "succeeded",
                result=data.get("result"),
            )
        elif event.kind == "failed":
            trace = data.get("traceback")
            if trace:
                self._log(str(trace).splitlines(), "stderr")
            self._fail(
                str(data.get("error_code") or "EXCEPTION")[:64],
                str(data.get("error_message") or "the action failed"),
            )
        elif self.reason is None:  # canceled, though no one here asked: SIGTERM from outside
            self._fail("TERMINATED", "the action's process received SIGTERM from outside oprun")
        else:
            self._end_stopped(None)

    def _end_stopped(self, returncode: int | None) -> None:
        """The task ended without an outcome of its own: report why."""
        reason = self.reason
        sa, epoch = self.session_action_id, self.assignment.lease_epoch
        if reason is StopReason.LOST:
            return
        if reason is StopReason.CANCELED:
            self._reports.add(sa, epoch, "canceled", exit_code=returncode)
        elif reason is StopReason.RELEASED:
            self._reports.add(sa, epoch, "released")
        elif reason is StopReason.TIMEOUT:
            self._fail(
                "TIMEOUT",
                f"timed out after {self.assignment.timeout:g} s",
                exit_code=returncode,
            )
        else:
            code = returncode if returncode is not None else -1
            self._fail("CRASHED", _crash_message(code), exit_code=code)

    def _fail(self, code: str, message: str, *, exit_code: int | None = None) -> None:
        self._reports.add(
            self.session_action_id,
            self.assignment.lease_epoch,
            "failed",
            error_code=code,
            error_message=fit(message, chars=MAX_ERROR_MESSAGE_CHARS),
            exit_code=exit_code,
        )

    def _log(self, lines: list[str], stream: Any) -> None:
        if self.reason is StopReason.LOST:
            return
        cut = [_cut(line) for line in lines]
        self._reports.log(self.session_action_id, self.assignment.lease_epoch, cut, stream)

    def _system(self, line: str) -> None:
        self._log([line], "system")

    async def _clean_up(self) -> None:
        if not self._dir.exists():
            return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self._dir, True)


def _cut(line: str) -> str:
    """A log line escaped, then cut to the limit: the server stores it as it is."""
    return fit(line, utf8_bytes=MAX_LOG_LINE_BYTES)


def _stop_line(reason: StopReason, grace: float, *, started: bool) -> str:
    what = {
        StopReason.CANCELED: "cancel requested",
        StopReason.TIMEOUT: "timed out",
        StopReason.RELEASED: "giving the task back",
        StopReason.LOST: "lease lost",
    }[reason]
    if not started:
        return f"oprun: {what} before it started (it waited for a free slot)"
    how = (
        "killing its process group now"
        if grace <= 0
        else f"SIGTERM to its process group, SIGKILL after {grace:g} s"
    )
    return f"oprun: {what}: {how}"


def _crash_message(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the action's process was killed by {name} ({-returncode})"
    return f"the action's process exited with code {returncode} before the action returned"
