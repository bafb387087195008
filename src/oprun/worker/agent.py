"""`WorkerAgent`: registers with the server, claims work, runs it on child processes.

Three loops share one event loop:

- claim: long-polls `:claim` for as many tasks as there are free slots and
  starts each in `Slots`, on the executor of its action's kind (a python child
  from a pool, or an OpenJD session);
- heartbeat: the `HeartbeatLoop` renews every held lease every `lease_seconds / 3`
  and applies the answer: work to cancel (canceled, SIGTERM then SIGKILL) and
  work the worker lost (killed, never reported again);
- reports: the `ReportBatcher`, one batch in flight, order kept.

`request_stop()` drains: no more claims, running work gets `grace` seconds to
finish, what remains is canceled and reported `released` (the server requeues
it at once), reports are flushed, a last heartbeat says `STOPPED`.

A worker the server gave up for lost (silent past `OPRUN_WORKER_SILENCE`: stopped,
starved, or cut off from the server) is told to stop: it kills its work, which runs
elsewhere by then, and `run()` raises `WorkerGivenUp`, so `oprun worker` exits non-zero
and a supervisor that restarts on failure brings it back as a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar

import httpx

from oprun._version import __version__
from oprun.app import App
from oprun.domain.errors import NotFound, OprunError
from oprun.domain.limits import MAX_CLAIM, MAX_WAIT_SECONDS
from oprun.domain.models import ActionKind
from oprun.domain.protocol import (
    Assignment,
    ClaimRequest,
    Report,
    ReportBatchResponse,
    ReportOutcome,
    WorkerRegistration,
)
from oprun.startup import settle_startup_objects
from oprun.worker.client import WorkerClient
from oprun.worker.executor import Executor
from oprun.worker.heartbeat import HeartbeatLoop
from oprun.worker.metrics import ObservedClient, WorkerMetrics
from oprun.worker.openjd.execution import OpenJDExecutor
from oprun.worker.python.execution import PythonExecutor
from oprun.worker.reports import ReportBatcher
from oprun.worker.slots import Slots

log = logging.getLogger("oprun.worker")

RELEASE_GRACE = 2.0
"""SIGTERM-to-SIGKILL delay for work released at the end of a drain."""
FLUSH_TIMEOUT = 10.0
"""How long a stopping worker tries to deliver its last reports."""
CLAIM_SETTLE = 0.5
"""How long a stopping worker that gave work back waits for its last claim to answer."""
CLAIM_GATHER = 0.005
"""While work runs, how long a freed slot may wait for others before claiming for them all."""
PREFETCH_PER_SLOT = 3
"""Tasks held per slot beyond the slots by default, while tasks are short: a worker holds
up to four times its slots, as Celery's default prefetch multiplier does. With one per
slot, a PostgreSQL drain of no-ops claimed batches of 12 to 14 and ran 20 % slower. A
slot's line holds only what should start within a quarter of the second a prefetched
task waits before it goes back (`oprun.worker.slots`): three behind tasks of 0.08 s or
less, one behind tasks of 0.2 s."""


class WorkerGivenUp(OprunError):
    """The server gave this worker up for lost and told it to stop: start it again.

    It was not heard from for the server's worker silence (stopped, starved, or cut
    off from the server while the server kept running); its work has been handed to
    others. `oprun worker` exits non-zero on it, so a supervisor restarts it.
    """

    code: ClassVar[str] = "GIVEN_UP"


class WorkerAgent:
    """A worker: serves `queues` of the server at `url`, running up to `concurrency` tasks."""

    def __init__(
        self,
        url: str,
        token: str,
        app: App | None = None,
        *,
        name: str | None = None,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        heartbeat_interval: float | None = None,
        grace: float = 10.0,
        claim_wait: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Configure a worker; `run()` starts it.

        Args:
            url: the server's base URL.
            token: a worker (or admin) token; it never reaches the actions' processes.
            app: the actions this worker registers (it runs any python action by entrypoint).
            name: how the worker shows in the API; the host name by default.
            queues: the queues it serves.
            concurrency: tasks run at once (one child process each); the CPU count by default.
            prefetch: tasks held beyond `concurrency`, each waiting for a slot, while tasks
                are short (see `oprun.worker.slots`); `PREFETCH_PER_SLOT` per slot by default,
                0 for none.
            heartbeat_interval: seconds between heartbeats; `lease_seconds / 3` by default.
            grace: seconds between SIGTERM and SIGKILL on cancel, and to finish work when stopping.
            claim_wait: how long one claim long-polls the server.
            transport: an httpx transport (tests pass an in-process one).

        Raises:
            ValueError: a setting is out of range.
        """
        self.name = name or socket.gethostname()
        self.queues = list(queues or ["default"])
        self.concurrency = concurrency if concurrency is not None else (os.cpu_count() or 1)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        self.prefetch = prefetch if prefetch is not None else PREFETCH_PER_SLOT * self.concurrency
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be at least 0, got {self.prefetch}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace}")
        if not 0 <= claim_wait <= MAX_WAIT_SECONDS:
            raise ValueError(f"claim_wait must be between 0 and {MAX_WAIT_SECONDS:g} s")
        if heartbeat_interval is not None and not 0 < heartbeat_interval <= MAX_WAIT_SECONDS:
            raise ValueError(f"heartbeat_interval must be in (0, {MAX_WAIT_SECONDS:g}] s")
        self.app = app
        self.grace = grace
        self.claim_wait = claim_wait
        self.heartbeat_interval = heartbeat_interval
        self._url = url
        self._token = token
        self._transport = transport
        self.worker_id: str | None = None
        self.metrics = WorkerMetrics()
        """This worker's metrics (`oprun worker --metrics-port` serves them)."""
        self._client: WorkerClient | None = None
        self._reports = ReportBatcher(self._send_reports, self._on_settled)
        self._slots: Slots | None = None
        self._heartbeats: HeartbeatLoop | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._stopping = False
        self._register_lock = asyncio.Lock()
        self._given_up = False

    # -- public -------------------------------------------------------------------------
    def request_stop(self, *, force: bool = False) -> None:
        """Drain and stop (safe to call again: the second call, or `force`, kills running work)."""
        if self._stop.is_set() or force:
            self._force.set()
            if self._slots is not None:
                self._slots.release_all(grace=0)
        self._stop.set()

    async def run(self) -> None:
        """Register, then serve until `request_stop()` or the server says stop.

        Raises:
            oprun.domain.errors.AuthenticationError: the token is not valid.
            oprun.domain.errors.AccessDenied: the token may not act as a worker.
            WorkerGivenUp: the server gave this worker up for lost and told it to stop
                (after its work was killed and its reports flushed).
        """
        workdir = Path(tempfile.mkdtemp(prefix="oprun-worker-"))
        python = PythonExecutor(self._reports, grace=self.grace, workdir=workdir)
        executors: dict[ActionKind, Executor] = {
            ActionKind.PYTHON: python,
            ActionKind.OPENJD: OpenJDExecutor(self._reports, grace=self.grace, workdir=workdir),
        }
        slots = self._slots = Slots(
            self.concurrency,
            self._reports,
            executors,
            claim=self._claim_for_session,
            prefetch=self.prefetch,
        )
        self._client = ObservedClient(
            self._url, self._token, metrics=self.metrics, transport=self._transport
        )
        self.metrics.bind(
            slots_total=lambda: slots.concurrency,
            slots_busy=lambda: slots.busy,
            report_lag=self._reports.lag,
            reports_sent=lambda: self._reports.sent_reports,
            child_restarts=lambda: python.restarts,
        )
        heartbeats = self._heartbeats = HeartbeatLoop(
            self._client,
            slots,
            interval=self.heartbeat_interval,
            worker_id=lambda: self.worker_id,
            on_unknown=self._reregister,
            on_stop=self._stop_requested_by_server,
        )
        loops: list[asyncio.Task[Any]] = []
        try:
            registered = await self._until_stopped(self._register(self._client))
            if not registered:
                return
            loops = [
                asyncio.create_task(self._claim_loop(), name="oprun-claim"),
                asyncio.create_task(heartbeats.run(), name="oprun-heartbeat"),
                asyncio.create_task(self._reports.run(), name="oprun-reports"),
            ]
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait([*loops, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            failure = next(
                (t.exception() for t in loops if t.done() and not t.cancelled() and t.exception()),
                None,
            )
            if failure is not None:
                log.error("worker_failed error=%s: %s", type(failure).__name__, failure)
            await self._drain(loops)
            if failure is not None:
                raise failure
            if self._given_up:
                raise WorkerGivenUp(
                    f"the server gave worker {self.worker_id} up for lost after a silence; "
                    "its work runs elsewhere: start the worker again (a supervisor does)",
                    worker_id=self.worker_id,
                )
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await slots.close()
            await self._client.aclose()
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("worker_stopped worker_id=%s", self.worker_id)

    # -- registration -------------------------------------------------------------------
    async def _claim_for_session(self, request: ClaimRequest) -> list[Assignment]:
        """A session's claim for more of its operation's work (never waits)."""
        if self._client is None or self.worker_id is None or self._stopping:
            return []
        response = await self._client.claim(self.worker_id, request)
        return response.assignments

    async def _register(self, client: WorkerClient) -> bool:
        definitions = self.app.definitions() if self.app is not None else []
        registration = WorkerRegistration(
            name=self.name[:128],
            hostname=socket.gethostname()[:255],
            queues=self.queues,
            capabilities={
                "kinds": [ActionKind.PYTHON.value, ActionKind.OPENJD.value],
                "concurrency": self.concurrency,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": sys.platform,
                "oprun": __version__,
                "pid": os.getpid(),
            },
            actions=definitions,
        )
        worker = await client.register(registration)
        self.worker_id = worker.id
        log.info(
            "worker_registered worker_id=%s name=%s url=%s queues=%s actions=%s concurrency=%s",
            worker.id,
            self.name,
            client.url,
            ",".join(self.queues),
            len(definitions),
            self.concurrency,
        )
        return True

    async def _reregister(self, stale_id: str | None) -> None:
        """The server no longer knows this worker: everything held is lost; register anew."""
        async with self._register_lock:
            if self.worker_id != stale_id or self._stopping:
                return
            log.warning("worker_unknown worker_id=%s action=register_again", stale_id)
            assert self._client is not None and self._slots is not None
            self._slots.lose_all()
            await self._register(self._client)

    # -- claim ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        assert self._client is not None and self._slots is not None
        assert self._heartbeats is not None
        slots = self._slots
        while not self._stop.is_set():
            if slots.free <= 0:
                slots.slot_freed.clear()
                await slots.slot_freed.wait()
                continue
            if slots.running and slots.free < slots.capacity:
                # Busy: tasks claimed together tend to end together, so gather the slots
                # they free into one claim rather than one request per task; stop
                # waiting as soon as no work runs (nothing more can free up).
                await self._gather(slots)
                if slots.free <= 0:
                    # A task that ended meanwhile ended the prefetch too (tasks run long
                    # now): the capacity shrank under the gather, and no place is free.
                    continue
            worker_id = self.worker_id
            assert worker_id is not None
            request = ClaimRequest(max=min(slots.free, MAX_CLAIM), wait=self.claim_wait)
            try:
                response = await self._client.claim(worker_id, request)
            except NotFound:
                await self._reregister(worker_id)
                continue
            for assignment in response.assignments:
                self._heartbeats.lease_seconds = assignment.lease_seconds
                slots.start(assignment)
            if response.stop:
                self._stop_requested_by_server()

    async def _gather(self, slots: Slots) -> None:
        """Wait up to `CLAIM_GATHER` for more slots to free, no longer once none is busy."""
        deadline = asyncio.get_running_loop().time() + CLAIM_GATHER
        while slots.running and not self._stop.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            slots.slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slots.slot_freed.wait(), left)

    def _stop_requested_by_server(self) -> None:
        """The server gave this worker up for lost (it says stop only then, while it serves)."""
        if not self._stop.is_set():
            self._given_up = True
            log.warning(
                "worker_given_up worker_id=%s action=kill_work_and_exit exit=nonzero",
                self.worker_id,
            )
            self.request_stop()

    # -- reports --------------------------------------------------------------------------
    async def _send_reports(self, body: str) -> ReportBatchResponse:
        assert self._client is not None
        worker_id = self.worker_id
        assert worker_id is not None
        try:
            return await self._client.report(worker_id, body)
        except NotFound:
            await self._reregister(worker_id)
            raise

    def _on_settled(self, report: Report, outcome: ReportOutcome) -> None:
        if self._slots is not None:
            self._slots.on_settled(report, outcome)

    # -- stopping -------------------------------------------------------------------------
    async def _drain(self, loops: list[asyncio.Task[Any]]) -> None:
        assert self._slots is not None and self._heartbeats is not None
        slots = self._slots
        self._stopping = True
        slots.drain()
        claim = loops[0]  # it ends after its current long poll; until then it may catch work
        await self._heartbeats.once("STOPPING")
        log.info(
            "worker_draining worker_id=%s running=%s grace=%s",
            self.worker_id,
            slots.running,
            self.grace,
        )
        running = slots.tasks()
        if running and not self._force.is_set():
            finished = asyncio.create_task(asyncio.wait(running))
            forced = asyncio.create_task(self._force.wait())
            await asyncio.wait(
                [finished, forced], timeout=self.grace, return_when=asyncio.FIRST_COMPLETED
            )
            finished.cancel()  # only the waiting: the work itself goes on
            forced.cancel()
        released = slots.running
        slots.release_all(grace=0 if self._force.is_set() else RELEASE_GRACE)
        await slots.wait()
        await self._flush()
        if released and not claim.done():
            # The server requeues released work at once, and a claim still waiting there
            # may take it for this worker: give that claim a moment to answer, so what it
            # brings is given back too, rather than left assigned to a worker that is gone.
            await asyncio.wait([claim], timeout=CLAIM_SETTLE)
        claim.cancel()
        with contextlib.suppress(asyncio.CancelledError, OprunError):
            await claim
        await slots.wait()
        await self._flush()
        for task in loops[1:]:
            task.cancel()
        await asyncio.gather(*loops[1:], return_exceptions=True)
        await self._heartbeats.once("STOPPED")

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(self._reports.flush(), FLUSH_TIMEOUT)
        except TimeoutError:
            log.warning("reports_not_delivered count=%s", len(self._reports))

    async def _until_stopped(self, coro: Coroutine[Any, Any, bool]) -> bool:
        """Run `coro` unless a stop comes first (then False)."""
        task = asyncio.create_task(coro)
        stopped = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            return False
        finally:
            for t in (task, stopped):
                t.cancel()
            await asyncio.gather(task, stopped, return_exceptions=True)


def run_worker(
    url: str,
    token: str,
    app: App | None = None,
    *,
    name: str | None = None,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    prefetch: int | None = None,
    heartbeat_interval: float | None = None,
    grace: float = 10.0,
    claim_wait: float = 20.0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run a `WorkerAgent` until SIGTERM or SIGINT (a second one kills running work).

    The plain entry point for the CLI; see `WorkerAgent` for the arguments. With
    `metrics_port`, the worker's metrics are served on `metrics_host`:`metrics_port`.
    """
    agent = WorkerAgent(
        url,
        token,
        app,
        name=name,
        queues=queues,
        concurrency=concurrency,
        prefetch=prefetch,
        heartbeat_interval=heartbeat_interval,
        grace=grace,
        claim_wait=claim_wait,
    )
    if metrics_port is not None:
        agent.metrics.serve(metrics_port, metrics_host)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.request_stop)
        settle_startup_objects()
        try:
            await agent.run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    asyncio.run(main())
