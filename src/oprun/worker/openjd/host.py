"""The process that hosts one OpenJD session for a worker: `python -m oprun.worker.openjd.host`.

openjd-sessions starts every action in a new session (`setsid`), so an action
would not die with a killed worker. The worker therefore runs the openjd
`Session` in this dedicated host, which guarantees that nothing outlives it:

- PR_SET_PDEATHSIG: the kernel sends SIGHUP when the worker dies, even by SIGKILL;
- PR_SET_CHILD_SUBREAPER: orphaned descendants are reparented to the host, so
  they stay in its process tree;
- on SIGHUP, SIGTERM or the end of stdin, the host SIGKILLs every descendant
  (found through `/proc`, see `oprun.worker._subprocess`) and exits.

The worker speaks JSON lines with it (`oprun.worker.openjd.session` is the other
side). stdout carries the protocol only (fd 1 is pointed at stderr at start);
stderr carries the host's own diagnostics.

Commands, one JSON object a line on stdin:
    {"cmd": "open", "session_id", "template", "job_parameters", "workdir"}
    {"cmd": "enter" | "exit", "id", "env", "step" (null for a job environment),
     "keep_running" (exit only: more tasks follow in this session)}
    {"cmd": "run", "id", "step", "parameters" (tagged union), "timeout" (s or null)}
    {"cmd": "cancel", "grace" (s or null)}     the running action, if any
    {"cmd": "reset"}                           a fresh openjd Session, after a failure
    {"cmd": "close"}                           clean up and exit

Events, one JSON object a line on stdout:
    {"event": "ready", "working_directory"} | {"event": "error", "code", "message", "details"}
    {"event": "output", "stream": "output" | "session", "lines": [...]}
    {"event": "progress", "id", "percent"} | {"event": "status", "id", "message"}
    {"event": "ended", "id", "state", "exit_code", "progress", "message"}
    {"event": "closed"}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from openjd.model import RevisionExtensions, SpecificationRevision
from openjd.sessions import LOG, ActionState, ActionStatus, Session

from oprun.domain.errors import OprunError
from oprun.openjd.job import OpenJDJob, create_job, task_parameter_set
from oprun.worker._subprocess import (
    ProcessInfo,
    become_subreaper,
    descendants,
    die_with_parent,
    is_running,
    kill_tree,
    reap_children,
    take_protocol_pipes,
    tree_keys,
)
from oprun.worker.openjd.host_output import HostEventWriter, OutputCapture

LEFTOVER_GRACE = 0.5
"""After a canceled action's process has died, what it left running gets this long
(seconds) before it is killed: openjd-sessions would otherwise wait 6 s for a
leftover that holds the action's output pipe."""
STATES = {
    ActionState.SUCCESS: "SUCCEEDED",
    ActionState.FAILED: "FAILED",
    ActionState.CANCELED: "CANCELED",
    ActionState.TIMEOUT: "TIMEOUT",
}


@dataclass
class _Action:
    id: int
    before: frozenset[tuple[int, int]]
    """The host's descendants when the action started: spared by the sweep after it."""
    timeout: float | None = None
    timer: threading.Timer | None = None
    timed_out: bool = False
    main: tuple[ProcessInfo, ...] = ()
    """The action's own process (openjd's direct child), once it started."""
    watching: bool = False
    progress: float | None = None
    status: str | None = None
    done: bool = False


class Host:
    """Runs the commands of one worker against one openjd `Session`."""

    def __init__(self, events: HostEventWriter) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._job: OpenJDJob | None = None
        self._session: Session | None = None
        self._capture: OutputCapture | None = None
        self._open: dict[str, Any] = {}
        self._action: _Action | None = None
        self._working_directory: Path | None = None
        events.on_broken = lambda: self.die(1)

    # -- commands -------------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> None:
        """Run one command."""
        command = message.get("cmd")
        if command == "open":
            self._open_session(message)
        elif command in ("enter", "exit", "run"):
            self._start_action(command, message)
        elif command == "cancel":
            self._cancel(message.get("grace"))
        elif command == "reset":
            self._close_session()
            self._open_session(self._open)
        elif command == "close":
            self._close_session()
            self._events.emit({"event": "closed"})
            os._exit(0)

    def _open_session(self, message: dict[str, Any]) -> None:
        self._open = message
        session_id = str(message["session_id"])
        try:
            self._job = create_job(message["template"], message.get("job_parameters") or {})
        except OprunError as exc:
            self._events.emit(
                {"event": "error", "code": exc.code, "message": exc.message, "details": exc.details}
            )
            return
        if self._capture is None:
            self._capture = OutputCapture(session_id, self._events)
            LOG.addHandler(self._capture)
            LOG.propagate = False
            threading.Thread(target=self._capture.run_flusher, daemon=True).start()
        workdir = Path(message["workdir"])
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            self._session = Session(
                session_id=session_id,
                job_parameter_values=self._job.parameter_values,
                job_name=self._job.job.name,
                callback=self._on_status,
                session_root_directory=workdir,
                revision_extensions=RevisionExtensions(
                    spec_rev=SpecificationRevision.v2023_09,
                    supported_extensions=self._job.extensions,
                ),
            )
        except (OSError, RuntimeError) as exc:
            self._events.emit({"event": "error", "message": str(exc), "details": {}})
            return
        self._working_directory = self._session.working_directory
        self._events.emit({"event": "ready", "working_directory": str(self._working_directory)})

    def _start_action(self, command: str, message: dict[str, Any]) -> None:
        action = _Action(id=int(message["id"]), before=tree_keys(os.getpid()))
        with self._lock:
            self._action = action
        try:
            if self._session is None or self._job is None:
                raise RuntimeError("no open session")
            if command == "run":
                self._run_task(message, action)
            else:
                self._environment(command, message)
            action.main = _action_process(action.before)
            if action.timeout is not None and not action.done:
                action.timer = threading.Timer(action.timeout, self._on_timeout, args=(action,))
                action.timer.daemon = True
                action.timer.start()
        except Exception as exc:  # the action fails, the host carries on
            text = exc.message if isinstance(exc, OprunError) else f"{type(exc).__name__}: {exc}"
            self._end(action, "FAILED", None, text)

    def _environment(self, command: str, message: dict[str, Any]) -> None:
        assert self._session is not None and self._job is not None
        step_name = message.get("step")
        name = str(message["env"])
        if step_name is None:
            candidates = self._job.job.jobEnvironments or []
            identifier, symtab = f"job/{name}", self._job.job_symbol_table
        else:
            candidates = self._step(step_name).stepEnvironments or []
            identifier = f"step/{step_name}/{name}"
            symtab = self._job.step_symbol_tables.get(step_name)
        if command == "exit":
            self._session.exit_environment(
                identifier=identifier,
                keep_session_running=bool(message.get("keep_running")),
                resolved_symtab=symtab,
            )
            return
        for environment in candidates:
            if environment.name == name:
                self._session.enter_environment(
                    environment=environment,
                    identifier=identifier,
                    step_name=step_name,
                    resolved_symtab=symtab,
                )
                return
        raise KeyError(
            f"no environment {name!r}" + (f" in step {step_name!r}" if step_name else "")
        )

    def _run_task(self, message: dict[str, Any], action: _Action) -> None:
        assert self._session is not None and self._job is not None
        step = self._step(str(message["step"]))
        parameters = task_parameter_set(message.get("parameters") or {})
        timeout = message.get("timeout")
        if timeout is not None:
            action.timeout = float(timeout)
        self._session.run_task(
            step_script=step.script,
            task_parameter_values=parameters,
            step_name=step.name,
            resolved_symtab=self._job.step_symbol_tables.get(step.name),
        )

    def _step(self, name: str) -> Any:
        assert self._job is not None
        for step in self._job.job.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r}")

    def _cancel(self, grace: Any) -> None:
        if self._session is None:
            return
        limit = timedelta(seconds=max(0.0, float(grace))) if grace is not None else None
        with contextlib.suppress(RuntimeError):  # no action is running
            self._session.cancel_action(time_limit=limit)
        with self._lock:
            action = self._action
        if action is not None:
            self._watch_leftovers(action)

    def _watch_leftovers(self, action: _Action) -> None:
        """Once a canceled action's process is dead, kill what it left behind."""
        with self._lock:
            if action.watching or action.done:
                return
            action.watching = True

        def watch() -> None:
            while not action.done:
                if not any(is_running(p) for p in action.main):
                    time.sleep(LEFTOVER_GRACE)
                    if not action.done:
                        kill_tree(os.getpid(), spare=action.before)
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, name=f"openjd-leftovers-{action.id}", daemon=True).start()

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.cleanup()
            self._session = None
            self._working_directory = None
        kill_tree(os.getpid())
        reap_children()
        if self._capture is not None:
            self._capture.flush()

    def die(self, code: int) -> NoReturn:
        """SIGKILL every descendant, remove the session's directory and exit at once."""
        try:
            kill_tree(os.getpid())
            if self._working_directory is not None:
                shutil.rmtree(self._working_directory, ignore_errors=True)
        finally:
            os._exit(code)

    # -- callbacks from openjd's threads -------------------------------------------------
    def _on_timeout(self, action: _Action) -> None:
        with self._lock:
            if action.done or self._session is None:
                return
            action.timed_out = True
        with contextlib.suppress(RuntimeError):
            self._session.cancel_action()
        self._watch_leftovers(action)

    def _on_status(self, session_id: str, status: ActionStatus) -> None:
        with self._lock:
            action = self._action
        if action is None or action.done:
            return
        if status.state == ActionState.RUNNING:
            if self._capture is not None:
                self._capture.flush()  # the lines printed before the message go first
            if status.progress is not None and status.progress != action.progress:
                action.progress = status.progress
                self._events.emit(
                    {"event": "progress", "id": action.id, "percent": status.progress}
                )
            if status.status_message is not None and status.status_message != action.status:
                action.status = status.status_message
                self._events.emit(
                    {"event": "status", "id": action.id, "message": status.status_message}
                )
            return
        state = STATES.get(status.state, "FAILED")
        if state == "CANCELED" and action.timed_out:
            state = "TIMEOUT"
        self._end(action, state, status, _describe(state, status, action))

    def _end(
        self, action: _Action, state: str, status: ActionStatus | None, message: str | None
    ) -> None:
        with self._lock:
            if action.done:
                return
            action.done = True
            if self._action is action:
                self._action = None
        if action.timer is not None:
            action.timer.cancel()
        if state != "SUCCEEDED":
            # Whatever the action started and left behind goes with it.
            kill_tree(os.getpid(), spare=action.before)
        reap_children()
        if self._capture is not None:
            self._capture.flush()
        self._events.emit(
            {
                "event": "ended",
                "id": action.id,
                "state": state,
                "exit_code": status.exit_code if status else None,
                "progress": status.progress if status else None,
                "message": message,
            }
        )


def _describe(state: str, status: ActionStatus, action: _Action) -> str | None:
    if status.fail_message:
        return status.fail_message
    if state == "FAILED":
        if status.exit_code is not None:
            return f"the action exited with code {status.exit_code}"
        return "the action failed before its process started (see the session log)"
    if state == "CANCELED":
        return "the action was canceled"
    if state == "TIMEOUT":
        if action.timed_out:
            return f"the task ran longer than its timeout of {action.timeout:g}s"
        return "the action ran longer than its template timeout"
    return None


def _action_process(before: frozenset[tuple[int, int]]) -> tuple[ProcessInfo, ...]:
    """The process openjd just started: the host's oldest new child.

    Orphans of the action are reparented to the host too, but only after the
    action started them; the oldest new child (lowest pid on a tie of start
    times) is the action itself. Empty when it already exited.
    """
    host = os.getpid()
    new = [p for p in descendants(host) if p.ppid == host and p.key not in before]
    return (min(new, key=lambda p: (p.start, p.pid)),) if new else ()


def main(argv: list[str] | None = None) -> NoReturn:
    """Set up pipes and signals, then run commands until `close` or the end of stdin."""
    parser = argparse.ArgumentParser(prog="python -m oprun.worker.openjd.host")
    parser.add_argument("--parent", type=int, default=0, help="the worker's pid")
    args = parser.parse_args(argv)

    protocol_fd, command_fd = take_protocol_pipes()

    host = Host(HostEventWriter(protocol_fd))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        host.die(128 + signum)

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    become_subreaper()
    die_with_parent(args.parent)
    try:
        with open(command_fd, "rb") as commands:
            for raw in commands:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    host.handle(message)
    except BaseException:
        traceback.print_exc()  # to stderr, which the worker logs
        host.die(1)
    host.die(0)  # stdin closed: the worker is gone, or wants us gone


if __name__ == "__main__":
    main()
