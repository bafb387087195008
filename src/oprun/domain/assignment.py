"""Who may take which waiting task, and with how long to run it.

A claim serves its worker's queues in priority order, never past a queue's
concurrency limit, and gives a worker only tasks whose requirements its
capabilities meet. Each attempt runs under its action's timeout, cut short by the
operation's deadline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oprun.domain.models import ActionDefinition, ActionKind, Requirements
from oprun.domain.params import tagged
from oprun.domain.status import WorkerStatus

NOT_CLAIMING = frozenset({WorkerStatus.STOPPING, WorkerStatus.STOPPED, WorkerStatus.NOT_RESPONDING})
"""Worker statuses that take no new work."""
MIN_TIMEOUT = 0.001
"""The timeout of an attempt that starts at (or past) its operation's deadline."""


def may_claim(
    status: WorkerStatus, last_heartbeat_at: float | None, now: float, lease_seconds: float
) -> bool:
    """Whether a worker may take work now.

    Not while it drains or stops, nor once it has been silent for a lease: a claim
    it left waiting must not take back the work just requeued from it. Only
    heartbeats count as signs of life, so a parked claim cannot make it look alive.
    """
    if status in NOT_CLAIMING:
        return False
    return (last_heartbeat_at or 0) >= now - lease_seconds


def fits(requirements: Mapping[str, Any] | None, capabilities: dict[str, Any]) -> bool:
    """Whether a worker's capabilities meet a task's requirements (and its action kind).

    `requirements` is what the operation kept (see `policy.requirements_of`).
    """
    if not requirements:
        return True
    kind = requirements.get("kind")
    if kind is not None and kind not in capabilities.get("kinds", [ActionKind.PYTHON.value]):
        return False
    needs = {k: v for k, v in requirements.items() if k != "kind"}
    return Requirements.model_validate(needs).satisfied_by(capabilities)


@dataclass(frozen=True)
class QueueLoad:
    """A queue a claim may serve, and how many of its tasks hold a worker now."""

    id: str
    priority: int
    max_concurrency: int | None
    busy: int = 0


def serving_order(queues: Sequence[QueueLoad]) -> list[list[str]]:
    """The queues with room, grouped by priority, highest first (each group in the given order)."""
    by_priority: dict[int, list[str]] = defaultdict(list)
    for queue in queues:
        if queue.max_concurrency is None or queue.busy < queue.max_concurrency:
            by_priority[queue.priority].append(queue.id)
    return [by_priority[p] for p in sorted(by_priority, reverse=True)]


def room_left(queues: Iterable[QueueLoad]) -> dict[str, int]:
    """Places left in each queue with a concurrency limit (the others are not listed)."""
    return {q.id: q.max_concurrency - q.busy for q in queues if q.max_concurrency}


@dataclass(frozen=True)
class Candidate:
    """A waiting task a claim may take."""

    task_id: str
    queue_id: str
    requirements: Mapping[str, Any] | None


def choose(
    candidates: Iterable[Candidate],
    capabilities: dict[str, Any],
    room: Mapping[str, int],
    want: int,
) -> tuple[list[str], dict[str, int]]:
    """Up to `want` of `candidates` (in their order) for a worker, and the room then left.

    A candidate is passed over when the worker does not meet its requirements or
    its queue has no place left (`room`, as from `room_left`).
    """
    left = dict(room)
    taken: list[str] = []
    for candidate in candidates:
        if len(taken) >= want:
            break
        if not fits(candidate.requirements, capabilities):
            continue
        if candidate.queue_id in left:
            if left[candidate.queue_id] <= 0:
                continue
            left[candidate.queue_id] -= 1
        taken.append(candidate.task_id)
    return taken, left


def attempt_timeout(timeout: float | None, deadline_at: float | None, now: float) -> float | None:
    """Seconds an attempt starting `now` may run: its action's timeout, up to the deadline.

    None: no limit. An attempt that starts at or after its operation's deadline
    gets `MIN_TIMEOUT` (the reaper is about to time the operation out).
    """
    if deadline_at is None:
        return timeout
    left = max(deadline_at - now, MIN_TIMEOUT)
    return left if timeout is None else min(timeout, left)


def task_parameters(definition: ActionDefinition, parameters: dict[str, Any]) -> dict[str, Any]:
    """A task's parameters as the tagged union of a `taskRun` definition."""
    if definition.kind is ActionKind.OPENJD:
        return parameters  # already tagged by the plan
    types = {p.name: p.type for p in definition.parameters}
    return {k: tagged(v, types.get(k, "json")) for k, v in parameters.items()}
