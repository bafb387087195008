"""When a step's tasks end: which waiting steps may start, and which never will.

A step with dependencies waits until every task of each step it depends on has
succeeded; then it is released (its tasks may be claimed). A waiting step that
depends, directly or through other steps, on a step with a failed or canceled
task can never run: its tasks are canceled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from oprun.domain.status import OperationStatus


@dataclass(frozen=True)
class StepTally:
    """How many of a step's tasks are in one status, and how many of those wait on other steps."""

    step: str
    status: OperationStatus
    count: int
    waiting: int = 0
    """Of these tasks, those not yet released (only QUEUED tasks wait)."""


@dataclass(frozen=True)
class StepRelease:
    """What an operation's steps do next."""

    ready: list[str]
    """Waiting steps whose dependencies all succeeded: their tasks may start now."""
    never: list[str]
    """Waiting steps that can never run, because a step they wait for failed."""


def release_steps(
    depends_on: Mapping[str, Sequence[str]], tallies: Iterable[StepTally]
) -> StepRelease:
    """Which of an operation's steps (`depends_on`: step -> the steps it waits for) move on.

    `tallies` counts the operation's tasks by step and status.
    """
    total: dict[str, int] = defaultdict(int)
    succeeded: dict[str, int] = defaultdict(int)
    failed: set[str] = set()
    waiting: set[str] = set()
    for tally in tallies:
        total[tally.step] += tally.count
        if tally.status is OperationStatus.SUCCEEDED:
            succeeded[tally.step] += tally.count
        elif tally.status in (OperationStatus.FAILED, OperationStatus.CANCELED):
            failed.add(tally.step)
        elif tally.status is OperationStatus.QUEUED and tally.waiting:
            waiting.add(tally.step)
    done = {step for step, n in total.items() if succeeded[step] == n}
    released = set(depends_on) - waiting
    return StepRelease(
        ready=steps_to_release(depends_on, done, released),
        never=sorted(steps_blocked_by_failure(depends_on, failed) & waiting),
    )


def steps_to_release(
    depends_on: Mapping[str, Sequence[str]], succeeded: set[str], released: set[str]
) -> list[str]:
    """Steps not yet released whose every dependency has all its tasks succeeded."""
    return sorted(
        name
        for name, deps in depends_on.items()
        if name not in released and all(dep in succeeded for dep in deps)
    )


def steps_blocked_by_failure(depends_on: Mapping[str, Sequence[str]], failed: set[str]) -> set[str]:
    """Steps that can never run because a step they (transitively) wait for failed."""
    blocked: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, deps in depends_on.items():
            if name not in blocked and any(d in failed or d in blocked for d in deps):
                blocked.add(name)
                changed = True
    return blocked
