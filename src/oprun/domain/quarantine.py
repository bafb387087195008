"""Quarantine: a worker that keeps failing one operation's tasks takes no more of them.

A worker is quarantined from an operation once its last `quarantine_after`
finished attempts at the operation's tasks all failed (a broken GPU driver, a
full disk): the tasks then go to other workers instead of burning every attempt
on the one machine that cannot run them.
"""

from __future__ import annotations

from collections.abc import Sequence

from oprun.domain.status import SessionActionStatus


def is_quarantined(last_ended: Sequence[SessionActionStatus], after: int) -> bool:
    """Whether a worker is kept off an operation after `after` failures in a row.

    `last_ended` holds how the worker's finished attempts at the operation's tasks
    ended, newest first (at least the last `after` of them).
    """
    if after <= 0 or len(last_ended) < after:
        return False
    return all(status is SessionActionStatus.FAILED for status in last_ended[:after])


def quarantine_message(worker_id: str, after: int) -> str:
    """The line the operation's log gets when a worker is quarantined from it."""
    return (
        f"worker {worker_id} failed {after} tasks in a row: it takes no more of this "
        "operation's tasks"
    )
