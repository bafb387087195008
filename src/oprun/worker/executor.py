"""What `Slots` needs from the two ways a worker runs work: the `Executor` protocol.

An action's kind (`oprun.domain.models.ActionKind`) picks its executor:

- `oprun.worker.python.execution.PythonExecutor`: a python action's task runs on a child
  process from a pool, reused task after task;
- `oprun.worker.openjd.execution.OpenJDExecutor`: an OpenJD task opens a session that runs
  more tasks of its operation in turn (asking for each with `NextTask`), so its
  environments are entered once per session.

Either way the executor hands out an `Execution`: one unit of work that runs to
its end, reports as it goes, and can be stopped for a `StopReason`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Protocol

from oprun.domain.protocol import Assignment


class StopReason(enum.StrEnum):
    """Why the worker stops work before it ends by itself."""

    CANCELED = "canceled"
    """The operation was canceled."""
    TIMEOUT = "timeout"
    """The attempt ran longer than its timeout."""
    RELEASED = "released"
    """The worker is draining and gives the work back."""
    LOST = "lost"
    """The lease lapsed or was superseded: someone else may run it now."""


NextTask = Callable[[Assignment], Awaitable[Assignment | None]]
"""A session's continuation: the next task of the assignment's operation for its
session, held by the worker; None when there is no more (or the worker stops)."""


class Execution(Protocol):
    """One unit of work running on this worker, reporting what happens, in order.

    The outcome reported is what happened: the work's own outcome when it gave
    one, else why the worker stopped it (`canceled`, `TIMEOUT`, `released`), else
    a crash. Work the worker lost is killed and nothing more is reported for it.
    """

    @property
    def assignment(self) -> Assignment:
        """The assignment running now (a session moves on from one to the next)."""
        ...

    @property
    def session_action_id(self) -> str:
        """The session action running now: the key its lease is held by."""
        ...

    @property
    def reason(self) -> StopReason | None:
        """Why the worker stopped the work, once it did."""
        ...

    def stop(self, reason: StopReason, *, grace: float | None = None) -> None:
        """Stop the work: SIGTERM, then SIGKILL after `grace` seconds (0: at once).

        `grace` defaults to the executor's. The first reason is the one reported,
        except `LOST`, which overrides any other: the work is killed at once and
        nothing more is reported.
        """
        ...

    async def run(self) -> None:
        """Run the work to its end, reporting its events and its outcome.

        Raises:
            Exception: the worker could not run it (the caller reports the failure).
        """
        ...


class Executor(Protocol):
    """Runs the assignments of one action kind on this worker."""

    def execution(self, assignment: Assignment, next_task: NextTask) -> Execution:
        """The execution of `assignment`, not started yet: `Execution.run()` runs it.

        `next_task` gives a session its next task; executors that run one task
        at a time do not call it.
        """
        ...

    def drain(self) -> None:
        """The worker is stopping: from now on keep nothing for reuse."""
        ...

    async def close(self) -> None:
        """Release what is kept for reuse (idle child processes)."""
        ...
