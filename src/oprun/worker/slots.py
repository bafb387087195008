"""`Slots`: the work a worker holds, and its executions running on their executors.

A lease is held from the claim until the server has answered the work's last
report (or the lease is lost); a slot is busy only while the work runs. Each
assignment runs on the executor of its action's kind (see `oprun.worker.executor`);
an OpenJD session keeps its slot and moves on to more of its operation's tasks.

While tasks are short, a worker holds up to `prefetch` tasks more than it has slots:
they wait here for a slot, so a slot that frees starts its next task at once instead
of after a claim's round trip. A prefetched task waits at most `PREFETCH_PATIENCE`
for a slot, then goes back to the queue (released) for another worker. So that few
do, a slot holds in line only the tasks that should start within a quarter of that
patience (one for tasks of 0.2 s, three for tasks of 0.08 s or less); once tasks take
`PREFETCH_BELOW` or longer (a moving average), the worker stops prefetching, so long
work never queues behind long work while another worker could take it. A fresh worker
starts prefetching once its first tasks showed they are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from oprun.domain.models import ActionKind
from oprun.domain.protocol import Assignment, ClaimRequest, Held, Report, ReportOutcome
from oprun.worker.executor import Execution, Executor, StopReason
from oprun.worker.reports import TERMINAL_KINDS, ReportBatcher

log = logging.getLogger("oprun.worker")


Claim = Callable[[ClaimRequest], Awaitable[list[Assignment]]]

PREFETCH_PATIENCE = 1.0
"""Seconds a prefetched task waits for a slot before it is given back to the queue."""
PREFETCH_BELOW = 0.25
"""Prefetch only while tasks typically run shorter than this (seconds)."""
PREFETCH_START_WITHIN = 0.25
"""Share of `PREFETCH_PATIENCE` within which a slot's line of prefetched tasks should start."""
_SMOOTHING = 0.2
"""Weight of the newest run time in the moving average of run times."""


class Slots:
    """Up to `concurrency` executions at once, each on the executor of its action's kind.

    A python task runs on a pooled child; an OpenJD task opens a session that keeps
    its slot and runs more of its operation's tasks (claimed with `claim`) in turn.
    """

    def __init__(
        self,
        concurrency: int,
        reports: ReportBatcher,
        executors: Mapping[ActionKind, Executor],
        *,
        claim: Claim | None = None,
        prefetch: int = 0,
        patience: float | None = None,
    ) -> None:
        """Run at most `concurrency` tasks, each on `executors[its action's kind]`.

        `claim` asks the server for more work for a session (never waiting);
        `prefetch` tasks more may be held, each waiting up to `patience` seconds for a
        slot (`PREFETCH_PATIENCE` by default).
        """
        self.concurrency = concurrency
        self.prefetch = prefetch
        self._patience = PREFETCH_PATIENCE if patience is None else patience
        self._turns = asyncio.Semaphore(concurrency)
        self._waiting: dict[str, asyncio.Event] = {}
        """Executions waiting for a slot: set to end the wait (the work was stopped)."""
        self._typical: float | None = None
        """Moving average of how long tasks ran (seconds); None before the first."""
        self.slot_freed = asyncio.Event()
        """Set when a task ends (a slot is free)."""
        self.held_added = asyncio.Event()
        """Set when new work is held (a heartbeat should carry it soon)."""
        self._reports = reports
        self._executors = executors
        self._held: dict[str, Assignment] = {}
        self._claim = claim
        self._executions: dict[str, Execution] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Whether the worker is draining (see `drain()`)."""
        return self._stopping

    @property
    def capacity(self) -> int:
        """How many tasks may be held now: the slots, and the prefetch while tasks are short.

        Not before the first task ended: a fresh worker has not seen its tasks yet (an
        OpenJD session, long by nature, would open one session per prefetched task).
        """
        typical = self._typical
        if typical is None or typical >= PREFETCH_BELOW:
            return self.concurrency
        return self.concurrency + min(self.prefetch, self.concurrency * self._depth(typical))

    def _depth(self, typical: float) -> int:
        """Tasks a slot may hold in line: as many as start within `PREFETCH_START_WITHIN`.

        The last in line waits for every task before it: at least one may wait (the
        prefetch's reason to be), more only while they would start within a quarter of
        their patience, which leaves a loaded machine room before they go back.
        """
        if typical <= 0:
            return self.prefetch
        return max(1, int(self._patience * PREFETCH_START_WITHIN / typical))

    @property
    def free(self) -> int:
        """How many more tasks may be claimed now."""
        return max(0, self.capacity - len(self._executions))

    @property
    def running(self) -> int:
        """How many tasks run now or wait for a slot."""
        return len(self._executions)

    @property
    def busy(self) -> int:
        """How many slots are busy."""
        return min(self.concurrency, len(self._executions) - len(self._waiting))

    def held(self) -> list[Held]:
        """Every lease held, for a heartbeat."""
        return [
            Held(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch)
            for a in self._held.values()
        ]

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the work running now."""
        return list(self._tasks)

    # -- starting -------------------------------------------------------------------------
    def start(self, assignment: Assignment) -> None:
        """Hold `assignment` and run it (or give it back at once when stopping)."""
        sa = assignment.session_action_id
        self._held[sa] = assignment
        self.held_added.set()
        executor = self._executors[assignment.action.kind]
        execution = executor.execution(assignment, self._next_task)
        self._executions[sa] = execution
        log.debug(
            "task_claimed session_action_id=%s operation_id=%s action=%s attempt=%s",
            sa,
            assignment.operation_id,
            assignment.action.name,
            assignment.attempt,
        )
        if self.stopping:
            execution.stop(StopReason.RELEASED)
        task = asyncio.create_task(self._execute(execution))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, execution: Execution) -> None:
        try:
            if await self._turn(execution):
                loop = asyncio.get_running_loop()
                began = loop.time()
                try:
                    await execution.run()
                finally:
                    self._turns.release()
                    self._learn(loop.time() - began)
            else:
                await execution.run()  # stopped before its turn: it reports why, runs nothing
        except Exception as exc:
            sa = execution.session_action_id
            log.exception("task_error session_action_id=%s", sa)
            if execution.reason is not StopReason.LOST:
                message = f"the worker could not run the task: {type(exc).__name__}: {exc}"
                self._reports.add(
                    sa,
                    execution.assignment.lease_epoch,
                    "failed",
                    error_code="WORKER_ERROR",
                    error_message=message,
                )
        finally:
            self._executions.pop(execution.session_action_id, None)
            self.slot_freed.set()

    async def _turn(self, execution: Execution) -> bool:
        """Wait for a slot: True once it has one; False if stopped first or out of patience.

        Out of patience, the work is given back (released) for another worker.
        """
        if execution.reason is not None:
            return False
        if not self._turns.locked():
            await self._turns.acquire()  # free: no wait
            return True
        sa = execution.session_action_id
        stopped = self._waiting[sa] = asyncio.Event()
        turn = asyncio.ensure_future(self._turns.acquire())
        ended = asyncio.ensure_future(stopped.wait())
        waited = False
        try:
            await asyncio.wait(
                [turn, ended], timeout=self._patience, return_when=asyncio.FIRST_COMPLETED
            )
            waited = True
        finally:
            self._waiting.pop(sa, None)
            ended.cancel()
            turn.cancel()  # nothing if it has the slot already
            with contextlib.suppress(asyncio.CancelledError):
                await turn
            got = not turn.cancelled()
            if got and not waited:
                self._turns.release()  # this task was cancelled itself
        if got and execution.reason is None:
            return True
        if got:
            self._turns.release()
        elif execution.reason is None:
            log.info("task_released session_action_id=%s why=no_slot_in_time", sa)
            execution.stop(StopReason.RELEASED)
        return False

    def _learn(self, seconds: float) -> None:
        typical = self._typical
        self._typical = seconds if typical is None else typical + _SMOOTHING * (seconds - typical)

    def _stop(self, execution: Execution, reason: StopReason, grace: float | None = None) -> None:
        if grace is None:
            execution.stop(reason)
        else:
            execution.stop(reason, grace=grace)
        waiting = self._waiting.get(execution.session_action_id)
        if waiting is not None:
            waiting.set()

    async def _next_task(self, current: Assignment) -> Assignment | None:
        """The next task of `current`'s operation for its session, held; None: no more."""
        if self.stopping or self._claim is None:
            return None
        request = ClaimRequest(
            max=1,
            operation_id=current.operation_id,
            session_id=current.session_id,
            step_id=current.step_id,
        )
        try:
            found = await self._claim(request)
        except Exception as exc:
            log.warning("session_claim_failed session_id=%s error=%s", current.session_id, exc)
            return None
        if not found:
            return None
        nxt = found[0]
        execution = self._executions.pop(current.session_action_id, None)
        if execution is None or self.stopping:  # lost or stopping meanwhile: give it back
            self._held[nxt.session_action_id] = nxt
            self._reports.add(nxt.session_action_id, nxt.lease_epoch, "released")
            return None
        self._held[nxt.session_action_id] = nxt
        self._executions[nxt.session_action_id] = execution
        self.held_added.set()
        return nxt

    # -- stopping work --------------------------------------------------------------------
    def drain(self) -> None:
        """The worker is stopping: work claimed from now on, or not started, is given back."""
        self._stopping = True
        for executor in self._executors.values():
            executor.drain()
        for sa in list(self._waiting):
            execution = self._executions.get(sa)
            if execution is not None:
                self._stop(execution, StopReason.RELEASED)

    def cancel(self, sa: str) -> bool:
        """The operation was canceled: stop its work; True if that is news."""
        execution = self._executions.get(sa)
        if execution is None or execution.reason is not None:
            return False
        log.info("task_cancel session_action_id=%s", sa)
        self._stop(execution, StopReason.CANCELED)
        return True

    def lose(self, sa: str, why: str) -> bool:
        """The lease is gone: kill the work, report nothing more; True if it was running."""
        if self._held.pop(sa, None) is None:
            return False
        self._reports.discard(sa)
        execution = self._executions.get(sa)
        if execution is None:  # usually its outcome was applied while a heartbeat was under way
            log.debug("task_lost_after_outcome session_action_id=%s why=%s", sa, why)
            return False
        log.warning("task_lost session_action_id=%s why=%s action=kill", sa, why)
        self._stop(execution, StopReason.LOST)
        return True

    def lose_all(self) -> None:
        """Every lease is gone (the server forgot this worker)."""
        for execution in list(self._executions.values()):
            self._stop(execution, StopReason.LOST)
        self._held.clear()
        self._reports.discard_all()

    def release_all(self, grace: float) -> None:
        """Give back all running work (cancel it, SIGKILL after `grace`; 0 kills at once)."""
        for execution in list(self._executions.values()):
            self._stop(execution, StopReason.RELEASED, grace)

    def on_settled(self, report: Report, outcome: ReportOutcome) -> None:
        """The server answered a report: a refusal means the work is lost."""
        sa = report.session_action_id
        if not outcome.accepted:
            self.lose(sa, f"{report.kind} report refused: {outcome.reason}")
        elif report.kind in TERMINAL_KINDS:
            self._held.pop(sa, None)
            log.debug("task_reported session_action_id=%s outcome=%s", sa, report.kind)

    async def wait(self, timeout: float | None = None) -> None:
        """Wait until no work runs (or `timeout` passes)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Close what the executors keep for reuse (idle children)."""
        for executor in self._executors.values():
            await executor.close()
