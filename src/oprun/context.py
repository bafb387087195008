"""`Context`: what an action function receives first, inside the worker's child process.

    @app.action()
    def resize(ctx: Context, width: int) -> dict:
        ctx.step("PROCESSING")
        for i, image in enumerate(images):
            if ctx.cancelled:
                break
            ...
            ctx.progress(100 * (i + 1) / len(images), f"{i + 1} images")
        ctx.log("done")

Every call becomes one event for the worker, which batches them; nothing here is
throttled. This module imports only the standard library (and the limits), as it
is loaded in every child process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from oprun.domain.escaping import fit
from oprun.domain.limits import MAX_LOG_LINE_BYTES

MAX_MESSAGE_CHARS = 4096
"""A longer progress message is cut to this many characters."""
MAX_STEP_CODE_CHARS = 64
"""The longest step code."""

Emit = Callable[[dict[str, Any]], None]


class Cancelled(BaseException):
    """The operation was canceled; raised in the action's thread to stop it promptly.

    It derives from `BaseException` so that `except Exception` does not swallow it;
    catch it only to clean up, then re-raise.
    """


class Context:
    """The running task as its action function sees it.

    Attributes:
        operation_id: the operation this task belongs to.
        task_id: the task being run.
        session_action_id: this attempt's session action.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        parameters: the validated parameters, defaults filled in (read-only).
    The folders `input_dir` and `output_dir` are created when first used and
    deleted after the task.
    """

    def __init__(
        self,
        *,
        operation_id: str,
        task_id: str,
        attempt: int,
        parameters: Mapping[str, Any],
        input_dir: Path,
        output_dir: Path,
        session_action_id: str = "",
        emit: Emit | None = None,
        cancel_event: threading.Event | None = None,
    ) -> None:
        """Build a context; the worker does this. `emit` receives each event (dropped if None)."""
        self.operation_id = operation_id
        self.task_id = task_id
        self.session_action_id = session_action_id
        self.attempt = attempt
        self.parameters: Mapping[str, Any] = MappingProxyType(dict(parameters))
        self._input_dir = input_dir
        self._output_dir = output_dir
        self._emit = emit
        self._cancel = cancel_event if cancel_event is not None else threading.Event()
        self._closed = False

    @property
    def input_dir(self) -> Path:
        """A folder of this task's own for its inputs (created on first use)."""
        self._input_dir.mkdir(parents=True, exist_ok=True)
        return self._input_dir

    @property
    def output_dir(self) -> Path:
        """A folder of this task's own for its outputs (created on first use)."""
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    @property
    def cancelled(self) -> bool:
        """True once a cancel (or the timeout) reached this task: stop and return."""
        return self._cancel.is_set()

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report how far the task has come: `percent` in 0..100, and an optional message.

        Raises:
            ValueError: `percent` is not a finite number between 0 and 100.
        """
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise ValueError(f"progress percent must be a number, got {percent!r}")
        value = float(percent)
        if not math.isfinite(value) or not 0.0 <= value <= 100.0:
            raise ValueError(f"progress percent must be between 0 and 100, got {percent!r}")
        event: dict[str, Any] = {"event": "progress", "percent": value, "message": None}
        if message is not None:
            event["message"] = fit(str(message), chars=MAX_MESSAGE_CHARS)
        self._send(event)

    def step(self, code: str) -> None:
        """Set the phase the task is in (the operation's `step_code`), e.g. `"PROCESSING"`.

        Raises:
            ValueError: `code` is empty or longer than 64 characters.
        """
        code = str(code)
        if not code or len(code) > MAX_STEP_CODE_CHARS:
            raise ValueError(
                f"step code must be 1 to {MAX_STEP_CODE_CHARS} characters, got {code!r}"
            )
        self._send({"event": "step", "code": code})

    def log(self, *parts: Any) -> None:
        """Add a line to the operation's log: the parts joined by spaces, as `print` does.

        Text with several lines becomes several log lines; each is cut to
        `MAX_LOG_LINE_BYTES` bytes.
        """
        text = " ".join(str(part) for part in parts)
        for line in text.splitlines() or [""]:
            self._send({"event": "log", "line": cut_text(line, MAX_LOG_LINE_BYTES)})

    def close(self) -> None:
        """Stop sending events (the task is over; stray threads must not report into the next)."""
        self._closed = True

    def _send(self, event: dict[str, Any]) -> None:
        if self._emit is not None and not self._closed:
            self._emit(event)

    def __repr__(self) -> str:
        return f"Context(operation_id={self.operation_id!r}, task_id={self.task_id!r}, attempt={self.attempt})"


def cut_text(text: str, max_bytes: int) -> str:
    """`text` escaped, then cut to at most `max_bytes` bytes of UTF-8.

    A NUL or a lone surrogate is written out (`oprun.domain.escaping.fit`); the cut
    falls on a character boundary, never inside an escape.
    """
    return fit(text, utf8_bytes=max_bytes)
