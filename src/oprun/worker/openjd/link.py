"""`HostLink`: the worker's connection to one `python -m oprun.worker.openjd.host`.

It starts the host in its own session, sends commands and routes the host's events:
output, progress and status go to `on_output`; `ended` resolves the future of the
action it names; `ready` / `error` answer `request()`. When the host exits, every
pending action resolves as FAILED with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from oprun.domain.errors import ERRORS_BY_CODE, ValidationError
from oprun.domain.escaping import escape
from oprun.worker._subprocess import child_environment, kill_tree
from oprun.worker.openjd.events import OutputEvent

log = logging.getLogger("oprun.worker.openjd")

MAX_PROTOCOL_LINE_BYTES = 16 * 1024 * 1024
STDERR_LINES_KEPT = 20


class HostLink:
    """One host process and the JSON-lines protocol to it."""

    def __init__(
        self,
        *,
        on_output: Callable[[OutputEvent], None],
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        """Describe the link; `spawn()` starts the host.

        Args:
            on_output: called with the host's output, progress and status events.
            env: the host's environment; `child_environment()` by default.
            python: the interpreter; the worker's own by default.
        """
        self._on_output = on_output
        self._env = env
        self._python = python or sys.executable
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._control: asyncio.Future[dict[str, Any]] | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._killed = False
        self.dead = False
        """Whether the host has exited (its events are all read)."""

    @property
    def pid(self) -> int | None:
        """The host's pid once spawned."""
        return self._proc.pid if self._proc is not None else None

    @property
    def spawned(self) -> bool:
        """Whether `spawn()` was called."""
        return self._proc is not None

    async def spawn(self) -> None:
        """Start the host (a new session, so its own process group)."""
        self._proc = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "oprun.worker.openjd.host",
            "--parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=child_environment(self._env),
            limit=MAX_PROTOCOL_LINE_BYTES,
        )
        self._tasks = [
            asyncio.create_task(self._read_events(), name=f"openjd-events-{self.pid}"),
            asyncio.create_task(self._read_stderr(), name=f"openjd-stderr-{self.pid}"),
        ]

    def send(self, message: dict[str, Any]) -> None:
        """Send one command (dropped once the host is gone)."""
        if self._proc is None or self._proc.stdin is None or self.dead:
            return
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with contextlib.suppress(OSError, RuntimeError):
            self._proc.stdin.write(data)

    async def request(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send `open` or `reset` and return the `ready` event.

        Raises:
            OprunError: the host answered `error` (a `ValidationError` for a bad
                template or job parameters).
            RuntimeError: the host exited instead.
        """
        self._control = asyncio.get_running_loop().create_future()
        self.send(command)
        event = await self._control
        if event["event"] == "ready":
            return event
        message = str(event.get("message") or self.death_message())
        if event["event"] == "error":
            cls = ERRORS_BY_CODE.get(str(event.get("code")), ValidationError)
            raise cls(message, **(event.get("details") or {}))
        raise RuntimeError(message)

    def start_action(self, command: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send an `enter`/`exit`/`run` command; the future is its `ended` event."""
        future = asyncio.get_running_loop().create_future()
        if self.dead:
            future.set_result({"state": "FAILED", "message": self.death_message()})
            return future
        self._seq += 1
        self._waiters[self._seq] = future
        self.send({**command, "id": self._seq})
        return future

    async def close(self, timeout: float) -> None:
        """Ask the host to clean up and exit; kill it if it takes over `timeout` s."""
        if self._proc is not None and not self.dead:
            self.send({"cmd": "close"})
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                log.warning("openjd_host_close_timeout pid=%s", self._proc.pid)
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL the host and every process it started, and wait until it is gone."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._killed = True
            kill_tree(self._proc.pid, include_root=True)
        await self._proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def death_message(self) -> str:
        """Why actions can no longer run: the host was killed or exited."""
        if self._killed:
            return "the session was killed"
        code = self._proc.returncode if self._proc is not None else None
        last = f": {self._stderr[-1]}" if self._stderr else ""
        return f"the OpenJD host process exited (code {code}){last}"

    # -- reading ------------------------------------------------------------------------
    async def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            while line := await stream.readline():
                try:
                    event = json.loads(line)
                except ValueError:
                    log.warning("openjd_host_garbled pid=%s bytes=%s", self.pid, len(line))
                    continue
                self._dispatch(event)
        finally:
            await self._proc.wait()
            self._gone()

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "output":
            lines = tuple(event["lines"])
            self._output(OutputEvent("log", lines=lines, stream=event.get("stream")))
        elif kind == "progress":
            self._output(OutputEvent("progress", percent=float(event["percent"])))
        elif kind == "status":
            self._output(OutputEvent("status", message=str(event["message"])))
        elif kind == "ended":
            future = self._waiters.pop(int(event["id"]), None)
            if future is not None and not future.done():
                future.set_result(event)
        elif kind in ("ready", "error") and self._control and not self._control.done():
            self._control.set_result(event)

    def _gone(self) -> None:
        self.dead = True
        gone = {"state": "FAILED", "message": self.death_message()}
        for future in self._waiters.values():
            if not future.done():
                future.set_result(gone)
        self._waiters.clear()
        if self._control is not None and not self._control.done():
            self._control.set_result({"event": "gone", "message": gone["message"]})

    def _output(self, event: OutputEvent) -> None:
        try:
            self._on_output(event)
        except Exception:
            log.exception("openjd_on_output_failed pid=%s", self.pid)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            text = escape(line.decode("utf-8", "surrogateescape")).rstrip()
            self._stderr.append(text)
            log.debug("openjd_host_stderr pid=%s line=%s", self.pid, text)
