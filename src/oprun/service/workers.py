"""Use cases of worker agents: register, claim, heartbeat, report."""

from __future__ import annotations

import asyncio
import json
import time
import weakref

from anyio.to_thread import run_sync

from oprun.domain.audit import AuditKind
from oprun.domain.errors import NotFound, ValidationError
from oprun.domain.limits import MAX_RESULT_BYTES, MAX_WAIT_SECONDS
from oprun.domain.models import Page, Worker
from oprun.domain.protocol import (
    Assignment,
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    Report,
    ReportBatch,
    ReportBatchResponse,
    WorkerRegistration,
)
from oprun.domain.roles import Permission
from oprun.domain.status import WorkerStatus
from oprun.service import cursor
from oprun.service.actions import change_guard, check_definition, require_kind_right
from oprun.service.audit import entry
from oprun.service.auth import Principal
from oprun.service.metrics import Metrics
from oprun.service.settings import Settings
from oprun.store import Store
from oprun.store.notify import work_key, worker_key
from oprun.store.protocol import Claimed

SHORT_CLAIM_MEMORY = 1.0
"""Seconds a worker's claim that came up short is remembered: its next claim within
that time waits at once, unless new work was published since (see `WorkerService.claim`)."""


def _bounded(report: Report) -> Report:
    """A success whose result is too large or not JSON becomes a failure that says so."""
    if report.kind != "succeeded":
        return report
    try:
        size = len(json.dumps(report.result))
    except (TypeError, ValueError):
        size = MAX_RESULT_BYTES + 1
    if size <= MAX_RESULT_BYTES:
        return report
    return report.model_copy(
        update={
            "kind": "failed",
            "result": None,
            "error_code": "RESULT_TOO_LARGE",
            "error_message": f"result is {size} bytes; the limit is {MAX_RESULT_BYTES}",
        }
    )


class WorkerService:
    """What worker agents call."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._seen: dict[str, Worker] = {}
        """Workers this process found live, by id: their project and queues never change."""
        self._short: dict[str, tuple[int, float]] = {}
        """Workers whose last claim here took less than it asked: the generation of their
        project's work key before it looked, and when it ended (monotonic)."""
        self._emptied: dict[str, tuple[int, frozenset[str], float]] = {}
        """By work key: the last claim here that took less than it asked and was
        `Claimed.exhaustive`: the key's generation before it looked, its worker's
        queues, and when it ended (monotonic)."""
        self._waking: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        """By event loop (a lock belongs to one), then work key: held by the claim woken
        by a publication that looks now."""

    def register(self, principal: Principal, registration: WorkerRegistration) -> Worker:
        """Register a worker and the actions it serves."""
        principal.require(Permission.WORK)
        checked = []
        for definition in registration.actions:
            principal.require(Permission.DEFINE)
            require_kind_right(principal, definition)
            checked.append(check_definition(definition))
        guard = change_guard(principal)
        for definition in checked:
            self._store.save_action(
                principal.project_id,
                definition,
                guard=guard,
                actor=principal.token_id,
                audit=entry(principal, AuditKind.ACTION_SAVED),
            )
        return self._store.register_worker(
            principal.project_id,
            registration.name,
            registration.hostname,
            registration.queues,
            registration.capabilities,
        )

    def get(self, principal: Principal, worker_id: str) -> Worker:
        """One worker of the caller's project."""
        principal.require(Permission.READ)
        return self._store.get_worker(principal.project_id, worker_id)

    def page(
        self, principal: Principal, page_cursor: str | None, limit: int | None
    ) -> Page[Worker]:
        """Workers, newest first."""
        principal.require(Permission.READ)
        project = principal.project_id
        return cursor.paged(
            page_cursor,
            limit,
            lambda after, size: self._store.list_workers(project, after, size),
            key=lambda worker: worker.id,
        )

    def _emptied_since(self, key: str, looked_at: int | None, queues: list[str]) -> bool:
        """Whether another claim found `queues` empty since this one last looked.

        True when a claim that was `Claimed.exhaustive` and came up short looked after
        the last publication of `key`, which came after this claim's own look, under
        `SHORT_CLAIM_MEMORY` ago, serving every queue of `queues`, while this process
        hears every publication: looking now would find nothing.
        """
        emptied = self._emptied.get(key)
        if emptied is None:
            return False
        generation, served, ended = emptied
        notifier = self._store.notifier
        return (
            generation != looked_at
            and notifier.generation(key) == generation
            and time.monotonic() - ended < SHORT_CLAIM_MEMORY
            and notifier.hears_everything
            and served.issuperset(queues)
        )

    def _nothing_new(
        self, short: tuple[int, float] | None, key: str, request: ClaimRequest
    ) -> bool:
        """Whether a claim would find what the worker's last short claim found: nothing.

        True when that claim ended under `SHORT_CLAIM_MEMORY` ago and `key` has not been
        published since it looked (every change that makes work claimable publishes it),
        while this process hears every publication. Call it once listening on `key`.
        """
        if short is None or request.operation_id is not None or request.wait <= 0:
            return False
        generation, ended = short
        notifier = self._store.notifier
        return (
            time.monotonic() - ended < SHORT_CLAIM_MEMORY
            and notifier.hears_everything
            and notifier.generation(key) == generation
        )

    def _own_worker(self, principal: Principal, worker_id: str) -> Worker:
        principal.require(Permission.WORK)
        worker = self._store.get_worker(principal.project_id, worker_id)
        if worker.status is WorkerStatus.STOPPED:
            self._seen.pop(worker_id, None)
            raise NotFound(f"worker {worker_id} has stopped; register again", id=worker_id)
        if len(self._seen) >= 10_000:
            self._seen.clear()
        self._seen[worker_id] = worker
        return worker

    def _seen_worker(self, principal: Principal, worker_id: str) -> Worker | None:
        """The caller's worker as this process last found it live, without a database call.

        Only its id, project and queues may be relied on (they never change); its
        status may be stale, so whoever uses it checks the status where it matters:
        a claim checks it in its own transaction, a report's session actions are
        checked one by one.
        """
        worker = self._seen.get(worker_id)
        if (
            worker is None
            or worker.project_id != principal.project_id
            or worker.status is WorkerStatus.NOT_RESPONDING
        ):
            return None
        principal.require(Permission.WORK)
        return worker

    async def claim(
        self,
        principal: Principal,
        worker_id: str,
        request: ClaimRequest,
        hangup: asyncio.Event | None = None,
    ) -> ClaimResponse:
        """Up to `request.max` tasks; waits up to `request.wait` seconds for the first.

        `hangup` is set when the caller hangs up: a claim that waited for work must
        not take it for a worker that died while it waited.
        """
        if request.session_id is not None and request.operation_id is None:
            raise ValidationError(
                "a claim for a session names its operation_id", field="operation_id"
            )
        seen = self._seen_worker(principal, worker_id)
        worker = (
            seen if seen is not None else await run_sync(self._own_worker, principal, worker_id)
        )
        if worker.status is WorkerStatus.NOT_RESPONDING:
            return ClaimResponse(assignments=[], stop=True)
        lease = self._settings.lease_seconds
        notifier = self._store.notifier
        stop = False

        def take() -> Claimed:
            with self._metrics.timed_claim():
                return self._store.claim(
                    worker.id,
                    principal.project_id,
                    worker.queues,
                    request.max,
                    lease,
                    operation_id=request.operation_id,
                    session_id=request.session_id,
                    step_id=request.step_id,
                )

        key = work_key(principal.project_id)
        short = self._short.pop(worker_id, None)
        first = True
        looked_at: int | None = None
        """The generation of `key` when this claim last looked (or found it need not)."""

        async def look() -> list[Assignment]:
            nonlocal seen, stop, looked_at
            generation = looked_at = notifier.generation(key)
            taken = await run_sync(take)
            ended = time.monotonic()
            came_short = request.operation_id is None and len(taken) < request.max
            # What a short claim found holds until a publication, unless a queue's
            # concurrency limit held work back: a task there ending frees room quietly.
            if came_short and not taken.refused and not taken.limited:
                if len(self._short) >= 10_000:
                    self._short.clear()
                self._short[worker_id] = (generation, ended)
            else:
                self._short.pop(worker_id, None)
            if came_short and taken.exhaustive:
                if len(self._emptied) >= 10_000:
                    self._emptied.clear()
                self._emptied[key] = (generation, frozenset(worker.queues), ended)
            if taken.refused and seen is not None:
                # Refused on a status read before: read it now, before waiting, so a
                # stopped or silent worker hears so at once, as with a fresh read.
                seen = None
                stop = (
                    await run_sync(self._own_worker, principal, worker_id)
                ).status is WorkerStatus.NOT_RESPONDING
            return taken

        parked = False
        """Whether this claim waits for a publication now (`Metrics.claims_waiting`)."""

        def park(waits: bool) -> None:
            nonlocal parked
            if waits != parked:
                parked = waits
                self._metrics.claims_waiting.inc(1 if waits else -1)

        async def fetch() -> list[Assignment]:
            park(False)
            found = await find()
            park(not found and not stop)  # until the next publication (or the wait's end)
            return found

        async def find() -> list[Assignment]:
            nonlocal first, looked_at
            if notifier.should_answer(hangup):
                return []  # never take work for a caller that hung up
            if first:
                first = False
                if seen is not None and self._nothing_new(short, key, request):
                    # Its last claim here found less than it wanted a moment ago, and no
                    # work was published since: looking again now would find nothing.
                    # Wait for the next publication, as if that claim had gone on waiting.
                    assert short is not None
                    looked_at = short[0]
                    return []
                return await look()
            # Woken by a publication (or at the end of the wait). A publication wakes
            # every claim of the project parked here: they look one at a time, and one
            # that a claim woken by the same publication already found empty for its
            # queues goes back to waiting, where each would have looked in vain.
            locks = self._waking.setdefault(asyncio.get_running_loop(), {})
            async with locks.setdefault(key, asyncio.Lock()):
                if notifier.should_answer(hangup):
                    return []
                if self._emptied_since(key, looked_at, worker.queues):
                    looked_at = notifier.generation(key)
                    return []
                return await look()

        try:
            assignments = await notifier.long_poll(
                [key], request.wait, hangup, fetch, lambda a: bool(a) or stop
            )
        finally:
            park(False)
        self._metrics.claimed(principal.project_id, assignments)
        return ClaimResponse(assignments=assignments, stop=stop)

    async def heartbeat(
        self,
        principal: Principal,
        worker_id: str,
        beat: Heartbeat,
        wait: float,
        hangup: asyncio.Event | None = None,
    ) -> HeartbeatResponse:
        """Renew leases; with `wait`, answers early when held work is canceled."""
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise ValidationError(
                f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds", field="wait"
            )
        worker = await run_sync(self._own_worker, principal, worker_id)
        lease = self._settings.lease_seconds
        if worker.status is WorkerStatus.NOT_RESPONDING:
            # It was given up for lost; its work may run elsewhere now. It must stop.
            ended = await run_sync(self._store.abandon_worker, worker.id)
            self._metrics.requeues.labels("worker_lost").inc(ended)
            lost = [h.session_action_id for h in beat.held]
            return HeartbeatResponse(lost=lost, lease_seconds=lease, stop=True)
        status = WorkerStatus(beat.status)
        if status is WorkerStatus.STOPPED:
            cancel, lost = await run_sync(
                self._store.heartbeat, worker.id, beat.held, status, lease
            )
            released = await run_sync(self._store.release_worker, worker.id)
            self._metrics.requeues.labels("worker_stopped").inc(released)
            return HeartbeatResponse(cancel=cancel, lost=lost, lease_seconds=lease, stop=True)

        async def fetch() -> tuple[list[str], list[str]]:
            return await run_sync(self._store.heartbeat, worker.id, beat.held, status, lease)

        cancel, lost = await self._store.notifier.long_poll(
            [worker_key(worker.id)],
            wait,
            hangup,
            fetch,
            lambda found: bool(found[0] or found[1]) or not beat.held,
        )
        return HeartbeatResponse(cancel=cancel, lost=lost, lease_seconds=lease)

    def report(
        self, principal: Principal, worker_id: str, batch: ReportBatch
    ) -> ReportBatchResponse:
        """Apply a batch of reports in order.

        A worker seen live before is not read again: a report is checked against its
        session action (this worker's, this lease, still live), which a stopped
        worker no longer holds.
        """
        worker = self._seen_worker(principal, worker_id)
        if worker is None:
            worker = self._own_worker(principal, worker_id)
        # Session actions first (an environment is entered before the task it serves
        # runs), then the tasks' reports, then the sessions closed after them.
        session_outcomes = (
            self._store.apply_session_reports(worker.id, batch.sessions) if batch.sessions else []
        )
        outcomes = (
            self._store.apply_reports(worker.id, [_bounded(r) for r in batch.reports])
            if batch.reports
            else []
        )
        if batch.ended_sessions:
            self._store.apply_session_reports(worker.id, [], batch.ended_sessions)
        self._metrics.reported(batch, outcomes)
        return ReportBatchResponse(outcomes=outcomes, session_outcomes=session_outcomes)
