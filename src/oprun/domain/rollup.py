"""An operation's status follows its tasks: the one rule for deriving it."""

from __future__ import annotations

from oprun.domain.models import TaskCounts
from oprun.domain.status import OperationStatus


def rollup(current: OperationStatus, counts: TaskCounts, any_running: bool) -> OperationStatus:
    """The status an operation should have, given its tasks.

    `counts.running` counts tasks that hold a worker (SCHEDULED, RUNNING or
    CANCELING); `any_running` says whether one of them has started. The answer is
    always reachable from `current` by the status machine, perhaps through
    intermediate statuses (`current.path_to(answer)`); else `current` stays.
    """
    if current.is_terminal():
        return current
    total = counts.queued + counts.running + counts.succeeded + counts.failed + counts.canceled
    active = counts.queued + counts.running
    if total and not active:
        if counts.failed:
            target = OperationStatus.FAILED
        elif counts.canceled:
            target = OperationStatus.CANCELED
        else:
            target = OperationStatus.SUCCEEDED
    elif current is OperationStatus.CANCELING:
        target = current
    elif any_running:
        target = OperationStatus.RUNNING
    elif counts.running:
        target = current if current is OperationStatus.RUNNING else OperationStatus.SCHEDULED
    elif total - active:
        target = current  # some tasks done, the rest waiting: the operation is under way
    else:
        target = OperationStatus.QUEUED
    return target if current.path_to(target) is not None else current
