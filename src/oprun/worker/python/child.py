r"""The child process that runs python actions: `python -m oprun.worker.python.child`.

One child runs one task at a time and is reused for the next, so a task costs no
interpreter start. The worker starts it in a new session (its own process group)
with three pipes:

- stdin: JSON-lines commands, `{"run": {...}}` and `{"cancel": true}`;
- stdout: the protocol. At start the child moves it to a fresh, non-inheritable
  fd and points fd 1 at fd 2, so `print()` and any grandchild's output land in
  the captured output pipe and never corrupt the protocol;
- stderr: captured output, which the worker turns into log lines.

A run command carries `seq`, `entrypoint` (`module:qualname`), `parameters`,
`path_parameters`, `operation_id`, `task_id`, `session_action_id`, `attempt`,
`input_dir`, `output_dir`. The child answers with protocol events:
`running`, `progress` (`percent`, `message`), `step` (`code`), `log` (`line`),
then one of `succeeded` (`result`), `failed` (`error_code`, `error_message`,
`traceback`) or `canceled`. Before that last event it writes an end marker
(`\x1e<nonce>:<seq>`) to the output pipe, so the worker can attribute every
line printed before it to the task.

The child never outlives its worker: a thread reading stdin kills the whole
process group when stdin closes, and on Linux the parent's death also sends
SIGHUP (PR_SET_PDEATHSIG), whose handler does the same. SIGTERM cancels: it
raises `Cancelled` in the action's thread.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import inspect
import json
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from oprun.context import Cancelled, Context
from oprun.domain.escaping import fit
from oprun.domain.limits import MAX_RESULT_BYTES
from oprun.worker._subprocess import (
    die_with_parent,
    kill_own_group,
    take_protocol_pipes,
    write_line,
)

MAX_ERROR_MESSAGE_CHARS = 16_384
MAX_TRACEBACK_CHARS = 64 * 1024


class _State:
    """Where the main thread is, for the SIGTERM handler."""

    def __init__(self) -> None:
        self.phase = "idle"  # idle | user (in the action) | finishing (reporting)
        self.writing = False  # the main thread is writing a protocol line
        self.deferred = False  # a cancel arrived during that write
        self.exit_after_task = False
        self.cancel = threading.Event()
        self.main_thread = threading.get_ident()

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.cancel.set()
        if self.phase == "idle":
            os._exit(0)
        if self.phase == "finishing":
            self.exit_after_task = True
        elif self.writing:
            self.deferred = True
        else:
            raise Cancelled

    def after_write(self) -> None:
        if self.deferred and self.phase == "user":
            self.deferred = False
            raise Cancelled


class ChildEventWriter:
    """Writes the child's protocol events to the worker, one JSON line each, from any thread."""

    def __init__(self, fd: int, state: _State) -> None:
        self._fd = fd
        self._state = state
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        """Send one event."""
        self.send_line(json.dumps(event, separators=(",", ":"), default=str))

    def send_line(self, line: str) -> None:
        """Send one already encoded event (a JSON object without newlines)."""
        on_main = threading.get_ident() == self._state.main_thread
        with self._lock:
            if on_main:
                self._state.writing = True
            try:
                write_line(self._fd, line)
            except BrokenPipeError:
                kill_own_group()  # the worker is gone
            finally:
                if on_main:
                    self._state.writing = False
        if on_main:
            self._state.after_write()


class Runner:
    """Runs run commands one after the other in the main thread."""

    def __init__(self, events: ChildEventWriter, state: _State, nonce: str) -> None:
        self._events = events
        self._state = state
        self._nonce = nonce
        self._functions: dict[str, Callable[..., Any]] = {}

    def serve(self, commands: queue.SimpleQueue[dict[str, Any]]) -> NoReturn:
        """Run every command that arrives, forever (the worker ends this process)."""
        while True:
            self.run(commands.get())
            if self._state.exit_after_task:
                os._exit(0)

    def run(self, spec: dict[str, Any]) -> None:
        """Run one task and report its outcome."""
        seq = int(spec["seq"])
        state = self._state
        ctx: Context | None = None
        outcome: dict[str, Any] | str
        state.phase = "user"
        try:
            try:
                fn = self._load(str(spec["entrypoint"]))
            except Cancelled:
                raise
            except BaseException as exc:
                if state.cancel.is_set():
                    raise Cancelled from exc
                state.phase = "finishing"
                outcome = _failure("IMPORT_ERROR", exc)
            else:
                ctx = _context(spec, self._events, state.cancel)
                self._events.emit({"event": "running"})
                try:
                    result = fn(ctx, **_parameters(spec))
                    if inspect.iscoroutine(result):
                        import asyncio

                        result = asyncio.run(result)
                finally:
                    state.phase = "finishing"
                if state.cancel.is_set():
                    # It returned after the cancel reached it (seen in ctx.cancelled, say):
                    # the cancel wins. Only work that ended first keeps its outcome.
                    raise Cancelled
                outcome = _success(result)
        except BaseException as exc:
            state.phase = "finishing"
            # A cancel may surface as another exception: pydantic-core reports one raised
            # inside its regex match as a validation error, and user code may wrap it.
            # After a cancel, the outcome is the cancel.
            if isinstance(exc, Cancelled) or state.cancel.is_set():
                state.exit_after_task = True
                outcome = {"event": "canceled"}
            else:
                outcome = _failure("EXCEPTION", exc)
        if ctx is not None:
            ctx.close()
        self._finish(seq, outcome)
        state.phase = "idle"

    def _load(self, entrypoint: str) -> Callable[..., Any]:
        fn = self._functions.get(entrypoint)
        if fn is None:
            fn = load_entrypoint(entrypoint)
            self._functions[entrypoint] = fn
        return fn

    def _finish(self, seq: int, outcome: dict[str, Any] | str) -> None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        with contextlib.suppress(OSError):  # if the action closed fd 1, the worker waits a moment
            os.write(1, f"\x1e{self._nonce}:{seq}\n".encode())
        if isinstance(outcome, str):
            self._events.send_line(outcome)
        else:
            self._events.emit(outcome)


def load_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """Import `module:qualname` and return the callable it names.

    Raises:
        ImportError: the module cannot be imported or has no such attribute.
        TypeError: what it names is not callable.
    """
    module_name, _, qualname = entrypoint.partition(":")
    if not module_name or not qualname:
        raise ImportError(f"entrypoint {entrypoint!r} is not of the form 'module:function'")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not callable(obj):
        raise TypeError(f"entrypoint {entrypoint!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _context(spec: dict[str, Any], events: ChildEventWriter, cancel: threading.Event) -> Context:
    return Context(
        operation_id=str(spec.get("operation_id", "")),
        task_id=str(spec.get("task_id", "")),
        session_action_id=str(spec.get("session_action_id", "")),
        attempt=int(spec.get("attempt", 1)),
        parameters=spec.get("parameters") or {},
        input_dir=Path(spec["input_dir"]),
        output_dir=Path(spec["output_dir"]),
        emit=events.emit,
        cancel_event=cancel,
    )


def _parameters(spec: dict[str, Any]) -> dict[str, Any]:
    values = dict(spec.get("parameters") or {})
    for name in spec.get("path_parameters") or ():
        if isinstance(values.get(name), str):
            values[name] = Path(values[name])
    return values


def _success(result: Any) -> dict[str, Any] | str:
    try:
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return {
            "event": "failed",
            "error_code": "RESULT_NOT_JSON",
            "error_message": fit(
                f"the action returned a {type(result).__name__} that is not "
                f"JSON-serialisable: {exc}",
                chars=MAX_ERROR_MESSAGE_CHARS,
            ),
            "traceback": None,
        }
    if len(encoded) > MAX_RESULT_BYTES:
        return {
            "event": "failed",
            "error_code": "RESULT_TOO_LARGE",
            "error_message": f"result is {len(encoded)} bytes; the limit is {MAX_RESULT_BYTES}",
            "traceback": None,
        }
    return '{"event":"succeeded","result":' + encoded + "}"


def _failure(code: str, exc: BaseException) -> dict[str, Any]:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # our own frames say nothing to the user
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {
        "event": "failed",
        "error_code": code,
        "error_message": fit(f"{type(exc).__name__}: {exc}", chars=MAX_ERROR_MESSAGE_CHARS),
        "traceback": text[-MAX_TRACEBACK_CHARS:],
    }


def _read_commands(fd: int, commands: queue.SimpleQueue[dict[str, Any]], state: _State) -> None:
    """Watchdog: queue run commands, flag cancels, and die with the group on EOF."""
    try:
        with open(fd, "rb") as stream:
            for raw in stream:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message.get("run"), dict):
                    commands.put(message["run"])
                elif message.get("cancel"):
                    state.cancel.set()
    finally:
        kill_own_group()  # stdin closed: the worker is gone (or wants us gone)


def main(argv: list[str] | None = None) -> NoReturn:
    """Set up the pipes, signals and watchdog, then serve run commands."""
    parser = argparse.ArgumentParser(prog="python -m oprun.worker.python.child")
    parser.add_argument("--nonce", required=True, help="secret part of the end-of-task marker")
    parser.add_argument("--parent", type=int, default=0, help="the worker's pid")
    args = parser.parse_args(argv)

    protocol_fd, command_fd = take_protocol_pipes()
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    faulthandler.enable()

    state = _State()
    signal.signal(signal.SIGHUP, lambda signum, frame: kill_own_group())
    signal.signal(signal.SIGTERM, state.on_sigterm)
    die_with_parent(args.parent)

    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    watchdog = threading.Thread(
        target=_read_commands,
        args=(command_fd, commands, state),
        name="oprun-watchdog",
        daemon=True,
    )
    watchdog.start()
    Runner(ChildEventWriter(protocol_fd, state), state, args.nonce).serve(commands)


if __name__ == "__main__":
    main()
