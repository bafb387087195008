"""`OpenJDSession`: the worker's side of one OpenJD session, run in a host process.

    session = OpenJDSession(session_id=..., template=..., job_parameters=...,
                            workdir=..., on_action=..., on_output=...)
    await session.start()
    outcome = await session.run_task("Render", {"Frame": {"int": "1"}}, timeout=600)
    await session.end()       # exits the environments; or kill() to stop at once

The openjd `Session` runs in `python -m oprun.worker.openjd.host` (see there for why
and for the protocol; `oprun.worker.openjd.link` is the connection to it), so no
process of the session outlives the worker.

Environments follow OpenJD's session rules: the job environments are entered
before the first task, a step's environments before its first task (after the
previous step's are exited, in reverse order), and `end()` exits what is left in
reverse order. openjd-sessions allows only environment exits after an action
fails or is canceled, so the next `run_task` then exits every environment, starts
a fresh openjd session in the same host and enters them again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oprun.domain.session_kinds import RunnableKind
from oprun.openjd.plan import job_environment_names, step_environment_names
from oprun.worker.openjd.events import ActionEvent, ActionOutcome, OutputEvent
from oprun.worker.openjd.link import HostLink

log = logging.getLogger("oprun.worker.openjd")

START_TIMEOUT = 60.0
"""How long the host may take to start and open the session (seconds)."""
CLOSE_TIMEOUT = 30.0
"""How long the host may take to clean up and exit after `close` (seconds)."""


class OpenJDSession:
    """One OpenJD session of one job on this worker, run in a host child process."""

    def __init__(
        self,
        *,
        session_id: str,
        template: dict[str, Any],
        job_parameters: dict[str, Any],
        workdir: Path,
        on_action: Callable[[ActionEvent], None],
        on_output: Callable[[OutputEvent], None],
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        """Describe the session; `start()` launches its host.

        Args:
            session_id: names the session in openjd's logs.
            template: a job template accepted by `oprun.openjd.load_template`.
            job_parameters: the job's parameter values (typed or strings).
            workdir: the session's working directory is created inside it.
            on_action: called when an environment enter/exit or a task run starts
                or ends.
            on_output: called with the running action's output, progress and status.
            env: the host's environment; `child_environment()` by default (the
                worker's, without secrets). Actions inherit it.
            python: the interpreter for the host; the worker's own by default.
        """
        self.session_id = session_id
        self._template = template
        self._job_parameters = job_parameters
        self._workdir = Path(workdir)
        self._on_action = on_action
        self._job_envs = job_environment_names(template)
        self._link = HostLink(on_output=on_output, env=env, python=python)
        self._lock = asyncio.Lock()
        self._running = False
        self._inflight: asyncio.Future[dict[str, Any]] | None = None
        self._stack: list[tuple[str | None, str]] = []  # entered (step or None, environment)
        self._step: str | None = None  # the step whose environments are entered
        self._job_entered = False
        self._ending = False  # an action did not succeed: openjd allows only exits now
        self._cancel_requested = False
        self.working_directory: Path | None = None
        """The openjd session's working directory, once started."""

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The host process's pid once started."""
        return self._link.pid

    @property
    def environments(self) -> tuple[str, ...]:
        """The environments entered now, in the order they were entered."""
        return tuple(name for _, name in self._stack)

    async def start(self) -> None:
        """Launch the host and open the openjd session in it.

        Raises:
            ValidationError: the template or the job parameters are not valid.
            RuntimeError: the host could not start or open the session.
        """
        if self._link.spawned:
            raise RuntimeError("the session was already started")
        await self._link.spawn()
        try:
            await asyncio.wait_for(self._open(), START_TIMEOUT)
        except BaseException:
            await self.kill()
            raise

    async def run_task(
        self, step: str, parameters: dict[str, dict[str, str]], *, timeout: float | None
    ) -> ActionOutcome:
        """Run one task of `step`, entering (and exiting) environments as needed.

        Args:
            step: the step's name.
            parameters: the task's parameters as Deadline's tagged union.
            timeout: seconds the task's run may take, on top of the template's own
                action timeout; when it is reached the outcome is TIMEOUT.

        Returns:
            The task run's outcome; FAILED without running the task when an
            environment fails to enter (the message names it), CANCELED when
            `cancel()` came while environments were being entered.

        Raises:
            RuntimeError: the session was not started.
        """
        if not self._link.spawned:
            raise RuntimeError("start() the session first")
        async with self._lock:
            self._cancel_requested = False
            blocked = await self._prepare(step)
            if blocked is not None:
                return blocked
            return await self._act(
                "taskRun",
                None,
                step,
                {"cmd": "run", "step": step, "parameters": parameters, "timeout": timeout},
            )

    async def cancel(self, grace: float | None = None) -> None:
        """Cancel the running action (and the rest of a `run_task` under way).

        The template's cancelation method applies: NOTIFY_THEN_TERMINATE sends
        SIGTERM, then SIGKILL after its notify period, or after `grace` seconds when
        that is shorter; TERMINATE kills at once. Returns once the request is sent;
        the action's outcome (CANCELED) comes from `run_task`.
        """
        self._cancel_requested = True
        if self._running:
            self._link.send({"cmd": "cancel", "grace": grace})

    async def end(self) -> None:
        """Exit every entered environment in reverse order, then stop the host."""
        async with self._lock:
            if not self._link.spawned:
                return
            await self._exit_environments(keep_running=False, until_job=False)
            await self._link.close(CLOSE_TIMEOUT)
            self._remove_working_directory()

    async def kill(self) -> None:
        """Stop at once: the host and every process it started are SIGKILLed.

        No environment is exited. Actions under way end as FAILED.
        """
        await self._link.kill()
        self._remove_working_directory()
        self._stack.clear()

    # -- environments -------------------------------------------------------------------
    async def _prepare(self, step: str) -> ActionOutcome | None:
        """Enter what `step`'s task needs; an outcome when the task must not run."""
        if self._step is not None and self._step != step:
            await self._exit_environments(keep_running=True, until_job=True)
        if self._ending:
            await self._restart()
        if not self._job_entered:
            self._job_entered = True
            for name in self._job_envs:
                failed = await self._enter(None, name)
                if failed is not None:
                    return failed
        if self._step != step:
            self._step = step
            for name in step_environment_names(self._template, step):
                failed = await self._enter(step, name)
                if failed is not None:
                    return failed
        if self._cancel_requested:
            return ActionOutcome("CANCELED", message="canceled before the task started")
        return None

    async def _enter(self, step: str | None, name: str) -> ActionOutcome | None:
        if self._cancel_requested:
            return ActionOutcome("CANCELED", message="canceled before the task started")
        self._stack.append((step, name))  # openjd exits an environment even if entering failed
        outcome = await self._act(
            "envEnter", name, step, {"cmd": "enter", "env": name, "step": step}
        )
        if outcome.succeeded:
            return None
        if outcome.status == "CANCELED":
            return outcome
        where = f"step {step!r} environment" if step else "job environment"
        reason = outcome.message or outcome.status.lower()
        return ActionOutcome(
            "FAILED",
            exit_code=outcome.exit_code,
            message=f"{where} {name!r} failed to enter: {reason}",
        )

    async def _exit_environments(self, *, keep_running: bool, until_job: bool) -> None:
        """Exit entered environments in reverse order: a step's only, or all."""
        while self._stack and not self._link.dead:
            step, name = self._stack[-1]
            if until_job and step is None:
                break
            self._stack.pop()
            await self._act(
                "envExit",
                name,
                step,
                {"cmd": "exit", "env": name, "step": step, "keep_running": keep_running},
            )
        if until_job:
            self._step = None
        else:
            self._step, self._job_entered = None, False

    async def _restart(self) -> None:
        """After a failure: exit everything, then open a fresh openjd session."""
        await self._exit_environments(keep_running=False, until_job=False)
        self._stack.clear()
        if not self._link.dead:
            await self._link.request({"cmd": "reset"})
        self._ending = False

    # -- actions --------------------------------------------------------------------------
    async def _act(
        self, kind: RunnableKind, env: str | None, step: str | None, command: dict[str, Any]
    ) -> ActionOutcome:
        """Send one action to the host and wait for its end, reporting both."""
        if self._inflight is not None and not self._inflight.done():
            await self._inflight  # an action left behind by a cancelled caller
        self._on_event(ActionEvent(kind, env, "started", step))
        future = self._link.start_action(command)
        self._inflight, self._running = future, True
        try:
            ended = await asyncio.shield(future)
        except asyncio.CancelledError:
            self._ending = True
            self._link.send({"cmd": "cancel", "grace": None})
            raise
        finally:
            self._running = False
        outcome = ActionOutcome(
            status=ended["state"],
            exit_code=ended.get("exit_code"),
            message=ended.get("message"),
            progress=ended.get("progress"),
        )
        if not outcome.succeeded:
            self._ending = True
        self._on_event(ActionEvent(kind, env, "ended", step, outcome))
        return outcome

    async def _open(self) -> None:
        opened = await self._link.request(
            {
                "cmd": "open",
                "session_id": self.session_id,
                "template": self._template,
                "job_parameters": self._job_parameters,
                "workdir": str(self._workdir),
            }
        )
        self.working_directory = Path(opened["working_directory"])

    def _remove_working_directory(self) -> None:
        if self.working_directory is not None:
            shutil.rmtree(self.working_directory, ignore_errors=True)

    def _on_event(self, event: ActionEvent) -> None:
        try:
            self._on_action(event)
        except Exception:
            log.exception("openjd_on_action_failed session=%s", self.session_id)
