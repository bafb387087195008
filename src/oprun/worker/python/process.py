"""`ChildProcess`: the worker's side of one child process (see `oprun.worker.python.child`).

    child = ChildProcess()
    await child.start()
    await child.run(TaskSpec(seq=1, entrypoint="oprun.examples:echo", parameters={"value": 1}))
    async for item in child.items():      # ChildEvent | OutputLine | Exited
        ...                               # ends after the task's outcome or the child's exit
    await child.cancel(grace=10)          # or kill(); the child is then discarded
    await child.close()

A child is reused for task after task until it is canceled, killed or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.worker._subprocess import LineSplitter, child_environment, decode_line

log = logging.getLogger("oprun.worker.python.process")

MAX_PROTOCOL_LINE_BYTES = 8 * 1024 * 1024
"""A protocol line longer than this is malformed (results are bounded far below it)."""
MARKER_WAIT = 2.0
"""How long an outcome waits for the output printed before it (normally microseconds)."""
DRAIN_WAIT = 2.0
"""How long a dead child's output pipe may stay open before it is given up on."""
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class TaskSpec:
    """What a child needs to run one task."""

    seq: int
    entrypoint: str
    parameters: dict[str, Any] = field(default_factory=dict)
    path_parameters: tuple[str, ...] = ()
    operation_id: str = ""
    task_id: str = ""
    session_action_id: str = ""
    attempt: int = 1
    input_dir: str = ""
    output_dir: str = ""

    def command(self) -> dict[str, Any]:
        """The run command sent to the child."""
        return {
            "run": {
                "seq": self.seq,
                "entrypoint": self.entrypoint,
                "parameters": self.parameters,
                "path_parameters": list(self.path_parameters),
                "operation_id": self.operation_id,
                "task_id": self.task_id,
                "session_action_id": self.session_action_id,
                "attempt": self.attempt,
                "input_dir": self.input_dir,
                "output_dir": self.output_dir,
            }
        }


@dataclass(frozen=True)
class ChildEvent:
    """One protocol event from the child (`kind` is its `event` field)."""

    kind: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """Whether this is the task's outcome."""
        return self.kind in TERMINAL_EVENTS


@dataclass(frozen=True)
class OutputLine:
    """One line the task (or a process it started) wrote to stdout or stderr."""

    line: str


@dataclass(frozen=True)
class Exited:
    """The child process is gone; `returncode` is negative for a signal."""

    returncode: int


ChildItem = ChildEvent | OutputLine | Exited


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: ChildProcess) -> None:
        self._owner = owner

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if fd == 1:
            self._owner._on_protocol_data(data)
        elif fd == 2:
            self._owner._on_output_data(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._owner._on_protocol_eof()
        elif fd == 2:
            self._owner._on_output_eof()

    def process_exited(self) -> None:
        self._owner._on_process_exited()


class ChildProcess:
    """A long-lived child that runs tasks one at a time, in its own process group."""

    def __init__(
        self,
        *,
        python: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        """Describe a child; `start()` launches it.

        Args:
            python: the interpreter; the worker's own (`sys.executable`) by default.
            env: the environment; `child_environment()` by default.
            cwd: the working directory; the worker's by default.
        """
        self._python = python or sys.executable
        self._env = env
        self._cwd = str(cwd) if cwd is not None else None
        self._nonce = secrets.token_hex(16)
        self._marker = f"\x1e{self._nonce}:".encode()
        self._transport: asyncio.SubprocessTransport | None = None
        self._items: asyncio.Queue[ChildItem] = asyncio.Queue()
        self._protocol_lines = LineSplitter(MAX_PROTOCOL_LINE_BYTES)
        self._output_lines = LineSplitter(MAX_LOG_LINE_BYTES)
        self._seq = 0  # the task running now (0: none)
        self._events_open = False  # protocol events belong to the current task
        self._output_open = False  # output lines belong to the current task
        self._held: ChildEvent | None = None  # an outcome waiting for its end marker
        self._held_timer: asyncio.TimerHandle | None = None
        self._protocol_done = False
        self._output_done = False
        self._exited = False
        self._finished = False
        self._canceling = False
        self._dead = asyncio.Event()
        self._drain_timer: asyncio.TimerHandle | None = None
        self._returncode: int | None = None
        self.pid = 0

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Launch the child process (a new session, so a new process group)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            lambda: _Protocol(self),
            self._python,
            "-m",
            "oprun.worker.python.child",
            "--nonce",
            self._nonce,
            "--parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=self._env if self._env is not None else child_environment(),
            cwd=self._cwd,
        )
        self._transport = transport
        self.pid = transport.get_pid()
        log.debug("child_started pid=%s", self.pid)

    @property
    def alive(self) -> bool:
        """Whether the child can take a task."""
        return self._transport is not None and not self._finished and not self._canceling

    @property
    def busy(self) -> bool:
        """Whether a task is under way."""
        return self._seq != 0

    @property
    def returncode(self) -> int | None:
        """The exit code once the child is gone."""
        return self._returncode

    async def run(self, spec: TaskSpec) -> None:
        """Send one task; then read `items()` until its outcome.

        Raises:
            RuntimeError: the child was not started, or a task is under way.
        """
        if self._transport is None:
            raise RuntimeError("start() the child first")
        if self._seq:
            raise RuntimeError(f"child {self.pid} is already running task {self._seq}")
        self._seq = spec.seq
        self._events_open = self._output_open = not self._finished
        self._write(spec.command())

    def items(self) -> _Items:
        """Iterate the current task's events and output lines, up to its outcome or `Exited`."""
        return _Items(self)

    async def next_item(self) -> ChildItem:
        """The next event, output line or `Exited` (repeated once the child is gone)."""
        if self._finished and self._items.empty():
            return Exited(self._returncode if self._returncode is not None else -1)
        item = await self._items.get()
        if isinstance(item, Exited) or (isinstance(item, ChildEvent) and item.terminal):
            self._seq = 0
        return item

    async def cancel(self, grace: float) -> None:
        """Stop the task: `cancel` command, SIGTERM to the group, SIGKILL after `grace` s.

        Returns once the child and its whole process group are gone. The child is
        not reused afterwards.
        """
        if self._transport is None:
            return
        self._canceling = True
        self._write({"cancel": True})
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Polling: the kernel gives no event for a process group becoming empty.
        while time.monotonic() < deadline and self._group_alive():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._signal_group(signal.SIGKILL)
        await self._wait_dead()

    async def kill(self) -> None:
        """SIGKILL the child's process group now and wait until the child is gone."""
        if self._transport is None:
            return
        self._canceling = True
        self._signal_group(signal.SIGKILL)
        await self._wait_dead()

    async def close(self) -> None:
        """Kill the child (if still there) and release its pipes."""
        if self._transport is None:
            return
        if not self._finished:
            await self.kill()
        for timer in (self._held_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._transport.close()

    # -- plumbing -----------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        assert self._transport is not None
        pipe = self._transport.get_pipe_transport(0)
        if not isinstance(pipe, asyncio.WriteTransport) or pipe.is_closing():
            return
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with contextlib.suppress(OSError, RuntimeError):
            pipe.write(data)

    def _signal_group(self, signum: int) -> None:
        if not self.pid:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def _wait_dead(self) -> None:
        await self._dead.wait()

    def _on_protocol_data(self, data: bytes) -> None:
        for raw in self._protocol_lines.feed(data):
            self._on_protocol_line(raw)

    def _on_protocol_line(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            kind = str(message["event"])
        except (ValueError, KeyError, TypeError):
            log.warning("child_protocol_garbled pid=%s bytes=%s", self.pid, len(raw))
            return
        if not self._events_open:
            log.debug("child_event_dropped pid=%s event=%s (no task)", self.pid, kind)
            return
        event = ChildEvent(kind, message)
        if not event.terminal:
            self._items.put_nowait(event)
            return
        self._events_open = False
        if self._output_open:  # wait for the end marker: output printed before it comes first
            self._held = event
            self._held_timer = asyncio.get_running_loop().call_later(
                MARKER_WAIT, self._release_held
            )
        else:
            self._items.put_nowait(event)

    def _release_held(self) -> None:
        self._output_open = False
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if self._held is not None:
            self._items.put_nowait(self._held)
            self._held = None

    def _on_output_data(self, data: bytes) -> None:
        for raw in self._output_lines.feed(data):
            self._on_output_line(raw)

    def _on_output_line(self, raw: bytes) -> None:
        at = raw.find(self._marker)
        if at >= 0:
            if at:
                self._emit_output(raw[:at])
            if raw[at + len(self._marker) :].decode(errors="replace") == str(self._seq):
                self._release_held()
            return
        self._emit_output(raw)

    def _emit_output(self, raw: bytes) -> None:
        if self._output_open:
            self._items.put_nowait(OutputLine(decode_line(raw)))
        else:
            log.debug("child_output_dropped pid=%s (no task)", self.pid)

    def _on_protocol_eof(self) -> None:
        for raw in self._protocol_lines.close():
            self._on_protocol_line(raw)
        self._protocol_done = True
        self._maybe_gone()

    def _on_process_exited(self) -> None:
        self._exited = True
        if self._transport is not None:
            self._returncode = self._transport.get_returncode()
        self._maybe_gone()

    def _maybe_gone(self) -> None:
        """The child died: clean up its group unless a cancel is giving it grace."""
        if not (self._protocol_done and self._exited) or self._drain_timer is not None:
            return
        if not self._canceling:
            self._signal_group(signal.SIGKILL)  # nothing it started may outlive it
        if self._output_done:
            self._finish()
        else:
            self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_WAIT, self._finish)

    def _on_output_eof(self) -> None:
        for raw in self._output_lines.close():
            self._on_output_line(raw)
        self._output_done = True
        if self._drain_timer is not None:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._release_held()
        self._finished = True
        self._events_open = self._output_open = False
        code = self._returncode if self._returncode is not None else -1
        log.debug("child_exited pid=%s returncode=%s", self.pid, code)
        self._items.put_nowait(Exited(code))
        self._dead.set()


class _Items:
    """Async iterator over one task's items; stops after its outcome or `Exited`."""

    def __init__(self, child: ChildProcess) -> None:
        self._child = child
        self._done = False

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> ChildItem:
        if self._done:
            raise StopAsyncIteration
        item = await self._child.next_item()
        if isinstance(item, Exited) or (isinstance(item, ChildEvent) and item.terminal):
            self._done = True
        return item
