"""What the OpenJD host sends its worker: protocol events, and openjd's log as output lines.

See `oprun.worker.openjd.host` for the protocol itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from openjd.sessions import LogContent

from oprun.domain.escaping import fit
from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.worker._subprocess import write_line

FLUSH_INTERVAL = 0.05
"""Output lines are sent in batches at most this often (seconds)."""
MAX_BATCH_LINES = 500


class HostEventWriter:
    """Writes the host's protocol events to the worker, one JSON line each, from any thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.on_broken: Callable[[], object] = lambda: os._exit(1)

    def emit(self, event: dict[str, Any]) -> None:
        """Send one event; if the worker is gone, call `on_broken`."""
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            try:
                write_line(self._fd, line)
            except OSError:
                self.on_broken()


class OutputCapture(logging.Handler):
    """Collects one session's log lines from openjd's `LOG` and sends them in batches.

    Lines the action printed (its stdout and stderr: openjd merges them) go out as
    stream `output`; openjd's own lines (banners, commands, exit codes) as `session`.
    """

    def __init__(self, session_id: str, events: HostEventWriter) -> None:
        super().__init__(logging.INFO)
        self._session_id = session_id
        self._events = events
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue one record of our session (called by `logging`)."""
        if getattr(record, "session_id", None) != self._session_id:
            return
        content = getattr(record, "openjd_log_content", None)
        is_output = isinstance(content, LogContent) and (
            LogContent.COMMAND_OUTPUT in content and LogContent.BANNER not in content
        )
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format itself is not worth a crash
            text = str(record.msg)
        for line in text.splitlines() or [""]:
            # openjd-sessions decodes the action's output with `backslashreplace`: a byte
            # that is not UTF-8 arrives as `\xNN` already. Its own lines may hold lone
            # surrogates (a path's undecodable bytes): escaped the same way, then cut.
            cut = fit(line, utf8_bytes=MAX_LOG_LINE_BYTES)
            with self._lock:
                self._pending.append(("output" if is_output else "session", cut))

    def flush(self) -> None:
        """Send every queued line now.

        Flushes are serialised: once `flush()` returns, every line queued before
        the call has been sent, so an event sent next comes after them.
        """
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
            batch: list[str] = []
            stream = ""
            for kind, line in pending:
                if batch and (kind != stream or len(batch) >= MAX_BATCH_LINES):
                    self._events.emit({"event": "output", "stream": stream, "lines": batch})
                    batch = []
                stream = kind
                batch.append(line)
            if batch:
                self._events.emit({"event": "output", "stream": stream, "lines": batch})

    def run_flusher(self) -> None:
        """Flush every `FLUSH_INTERVAL` seconds, forever (a daemon thread)."""
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.flush()
