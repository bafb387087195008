"""`ReportBatcher`: collects a worker's reports and sends them in batches, in order.

Batching is natural: with no request in flight, what is queued goes at once; what
piles up while one is in flight goes as the next batch when it returns (up to 500
reports or 768 KiB a batch). One request is in flight at a time, so the order of
each session action's reports is kept. Log lines of one session action merge into
one `log` report, a burst of progress into its latest state, and a `running` still
unsent when the outcome comes is dropped (the server starts the attempt on its
outcome), so a chatty or short action costs few reports.

A `running` report is the one report held back: alone in the queue it waits up to
`RUNNING_HOLD` (20 ms) from when it was queued, unless anything else is to be sent
(it then goes along). A short task's outcome thus replaces it and goes alone, at once,
instead of waiting for a request that only said "running" to return; a longer task
shows as running at most 20 ms late. Nothing waits on the way to an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from oprun.domain.errors import OprunError
from oprun.domain.protocol import Report, ReportBatchResponse, ReportOutcome, SessionReport

log = logging.getLogger("oprun.worker.reports")

Stream = Literal["stdout", "stderr", "system"]
Send = Callable[[str], Awaitable[ReportBatchResponse]]
Settled = Callable[[Report, ReportOutcome], None]

RUNNING_HOLD = 0.02
"""How long a lone `running` report may wait for its outcome to replace it (seconds)."""
MAX_BATCH_REPORTS = 500
MAX_BATCH_BYTES = 768 * 1024
"""Well under the API's 1 MiB request limit."""
MAX_LOG_REPORT_LINES = 10_000
MAX_LOG_REPORT_BYTES = 128 * 1024
"""A log report's raw text; JSON escaping may grow it, still under `MAX_BATCH_BYTES`."""
TERMINAL_KINDS = frozenset({"succeeded", "failed", "canceled", "released"})


@dataclass(eq=False)
class _Entry:
    """A report not sent yet; log and progress entries still absorb later ones."""

    session_action_id: str
    lease_epoch: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    size: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    """When its first content was queued (later lines and progress merge into it)."""

    def report(self) -> Report:
        if self.kind == "log":
            return Report(
                session_action_id=self.session_action_id,
                lease_epoch=self.lease_epoch,
                kind="log",
                lines=self.lines,
                **self.fields,
            )
        return Report(
            session_action_id=self.session_action_id,
            lease_epoch=self.lease_epoch,
            kind=self.kind,
            **self.fields,
        )


class ReportBatcher:
    """Queues reports and sends them with `send`, one batch at a time.

    `on_settled(report, outcome)` is called for every report the server answered;
    a refused report (`outcome.accepted` false) means the worker no longer owns
    that session action. When a batch cannot be delivered at all (`send` raised
    an error), its reports are settled as refused with that error.
    """

    def __init__(
        self,
        send: Send,
        on_settled: Settled,
        *,
        running_hold: float = RUNNING_HOLD,
        max_reports: int = MAX_BATCH_REPORTS,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        """Batch reports for `send`; tell `on_settled` what became of each."""
        self._send = send
        self._on_settled = on_settled
        self._running_hold = running_hold
        self._max_reports = max_reports
        self._max_bytes = max_bytes
        self._queue: deque[_Entry] = deque()
        self._last: dict[str, _Entry] = {}  # the newest unsent entry of each session action
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        """Set when something other than a `running` report is queued: send without holding."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._sessions: list[SessionReport] = []
        self._sessions_since: float | None = None
        self._ended: list[str] = []
        self._sending_since: float | None = None
        self.sent_batches = 0
        self.sent_reports = 0
        """Reports (of tasks and sessions) delivered to the server, accepted or not."""

    # -- queueing -------------------------------------------------------------------------
    def add(self, session_action_id: str, lease_epoch: int, kind: str, **fields: Any) -> None:
        """Queue one report (`kind` and the `Report` fields it carries)."""
        last = self._last.get(session_action_id)
        if (
            kind in ("succeeded", "failed")
            and last is not None
            and last.kind == "running"
            and last.lease_epoch == lease_epoch
        ):
            self._queue.remove(last)  # the outcome starts the attempt on the server
        self._push(_Entry(session_action_id, lease_epoch, kind, fields))
        if kind != "running":
            self._urgent.set()

    def progress(
        self,
        session_action_id: str,
        lease_epoch: int,
        *,
        percent: float | None = None,
        message: str | None = None,
        step_code: str | None = None,
    ) -> None:
        """Queue progress; merges into the session action's unsent progress if it is the newest."""
        update = {"percent": percent, "message": message, "step_code": step_code}
        update = {k: v for k, v in update.items() if v is not None}
        last = self._last.get(session_action_id)
        if last is not None and last.kind == "progress" and last.lease_epoch == lease_epoch:
            last.fields.update(update)
            return
        self._push(_Entry(session_action_id, lease_epoch, "progress", update))
        self._urgent.set()

    def log(
        self, session_action_id: str, lease_epoch: int, lines: list[str], stream: Stream
    ) -> None:
        """Queue log lines; they join the session action's newest unsent log report if they can."""
        for line in lines:
            size = len(line.encode("utf-8", "replace")) + 4
            last = self._last.get(session_action_id)
            if (
                last is None
                or last.kind != "log"
                or last.lease_epoch != lease_epoch
                or last.fields.get("stream") != stream
                or len(last.lines) >= MAX_LOG_REPORT_LINES
                or last.size + size > MAX_LOG_REPORT_BYTES
            ):
                last = _Entry(session_action_id, lease_epoch, "log", {"stream": stream})
                self._push(last)
            last.lines.append(line)
            last.size += size
        self._urgent.set()

    def session(self, report: SessionReport) -> None:
        """Queue a report on a session-level action (environment enter/exit, sync)."""
        if not self._sessions:
            self._sessions_since = time.monotonic()
        self._sessions.append(report)
        self._idle.clear()
        self._wake.set()
        self._urgent.set()

    def end_session(self, session_id: str) -> None:
        """Queue the closing of a session (after its last reports)."""
        self._ended.append(session_id)
        self._idle.clear()
        self._wake.set()
        self._urgent.set()

    def discard(self, session_action_id: str) -> None:
        """Drop every unsent report of a session action (the worker lost it)."""
        self._queue = deque(e for e in self._queue if e.session_action_id != session_action_id)
        self._last.pop(session_action_id, None)

    def discard_all(self) -> None:
        """Drop every unsent report."""
        self._queue.clear()
        self._last.clear()
        self._sessions.clear()
        self._ended.clear()

    def __len__(self) -> int:
        return len(self._queue) + len(self._sessions) + len(self._ended)

    def lag(self) -> float:
        """Seconds the oldest report not yet answered by the server has waited (0: none).

        Safe to call from another thread (a metrics scrape): it only reads.
        """
        since = [self._sending_since, self._sessions_since if self._sessions else None]
        with contextlib.suppress(IndexError):  # emptied meanwhile by the event loop
            since.append(self._queue[0].queued_at)
        known = [s for s in since if s is not None]
        return max(0.0, time.monotonic() - min(known)) if known else 0.0

    def _push(self, entry: _Entry) -> None:
        self._queue.append(entry)
        self._last[entry.session_action_id] = entry
        self._idle.clear()
        self._wake.set()

    # -- sending --------------------------------------------------------------------------
    async def run(self) -> None:
        """Send batches until cancelled: at once, one in flight, what piled up next."""
        while True:
            if not len(self):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent.is_set() and self._only_running():
                # Only `running` reports are queued: give their outcomes a moment to
                # replace them (anything else queued meanwhile ends the hold).
                hold = self._queue[0].queued_at + self._running_hold - time.monotonic()
                if hold > 0:
                    # asyncio.timeout, not wait_for: no task made for each hold.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(hold):
                            await self._urgent.wait()
            self._urgent.clear()
            await self._send_one_batch()

    def _only_running(self) -> bool:
        return (
            not self._sessions and not self._ended and all(e.kind == "running" for e in self._queue)
        )

    async def flush(self) -> None:
        """Return once every report queued so far has been answered (or given up on)."""
        self._wake.set()
        self._urgent.set()
        while len(self) or not self._idle.is_set():
            await self._idle.wait()

    def _take(self) -> tuple[list[Report], list[str]]:
        reports: list[Report] = []
        parts: list[str] = []
        size = 0
        while self._queue and len(reports) < self._max_reports:
            entry = self._queue[0]
            try:
                report = entry.report()
            except ValueError as exc:  # a field out of range: say so, never block the queue
                self._queue.popleft()
                self._forget(entry)
                log.warning(
                    "report_invalid session_action_id=%s kind=%s error=%s",
                    entry.session_action_id,
                    entry.kind,
                    str(exc).replace("\n", " "),
                )
                continue
            encoded = report.model_dump_json(exclude_defaults=True)
            if reports and size + len(encoded) > self._max_bytes:
                break
            self._queue.popleft()
            self._forget(entry)
            reports.append(report)
            parts.append(encoded)
            size += len(encoded) + 1
        return reports, parts

    def _forget(self, entry: _Entry) -> None:
        if self._last.get(entry.session_action_id) is entry:
            del self._last[entry.session_action_id]

    async def _send_one_batch(self) -> None:
        since = [time.monotonic(), self._sessions_since if self._sessions else None]
        if self._queue:
            since.append(self._queue[0].queued_at)
        reports, parts = self._take()
        sessions, self._sessions = self._sessions, []
        ended: list[str] = []
        if not self._queue:  # a session closes only after all its reports went
            ended, self._ended = self._ended, []
        if not reports and not sessions and not ended:
            return
        self._sending_since = min(s for s in since if s is not None)
        body = '{"reports":[' + ",".join(parts) + "]"
        if sessions:
            encoded = ",".join(r.model_dump_json(exclude_defaults=True) for r in sessions)
            body += ',"sessions":[' + encoded + "]"
        if ended:
            body += ',"ended_sessions":' + json.dumps(ended)
        body += "}"
        try:
            response = await self._send(body)
            self.sent_reports += len(reports) + len(sessions)
            outcomes = response.outcomes
            for refused in (o for o in response.session_outcomes if not o.accepted):
                log.warning(
                    "session_report_refused session_action_id=%s reason=%s",
                    refused.session_action_id,
                    refused.reason,
                )
        except Exception as exc:
            code = exc.code if isinstance(exc, OprunError) else type(exc).__name__
            log.error("report_batch_failed reports=%s code=%s error=%s", len(reports), code, exc)
            outcomes = [
                ReportOutcome(
                    session_action_id=r.session_action_id, accepted=False, reason=str(exc)
                )
                for r in reports
            ]
        finally:
            self._sending_since = None
        self.sent_batches += 1
        if len(outcomes) != len(reports):
            log.error("report_outcomes_mismatch sent=%s answered=%s", len(reports), len(outcomes))
        for i, report in enumerate(reports):
            outcome = outcomes[i] if i < len(outcomes) else None
            if outcome is None or outcome.session_action_id != report.session_action_id:
                outcome = ReportOutcome(
                    session_action_id=report.session_action_id,
                    accepted=False,
                    reason="the server gave no outcome for this report",
                )
            self._on_settled(report, outcome)
