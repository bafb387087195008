"""What becomes of a task when an attempt at it ends without succeeding.

A failure the action reports runs again only when its operation's retry policy
retries that error code and attempts remain, after a backoff. An interrupted
attempt (its lease lapsed, its worker stopped answering) runs again at once while
attempts remain; one its worker gave back (it stopped, or released the task) runs
again without counting. Either way, a task whose operation is being canceled ends
CANCELED instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from oprun.domain.models import RetryPolicy
from oprun.domain.status import OperationStatus, SessionActionStatus


@dataclass(frozen=True)
class Retry:
    """A failed attempt's task runs again after `delay` seconds; `message` says so in its log."""

    delay: float
    message: str


def retry_after_failure(
    policy: RetryPolicy,
    attempts: int,
    max_attempts: int,
    error_code: str | None,
    jitter: float,
) -> Retry | None:
    """Whether, and after how long, a task runs again after its attempt `attempts` failed.

    `jitter` in [0, 1) spreads the backoff (see `RetryPolicy.delay`). None: the
    failure is final, because the policy does not retry `error_code` or no
    attempts remain.
    """
    if attempts >= max_attempts or not policy.retries(error_code):
        return None
    delay = policy.delay(attempts, jitter)
    code = error_code or "FAILED"
    return Retry(
        delay, f"attempt {attempts} failed ({code}); attempt {attempts + 1} in {delay:.1f} s"
    )


class AfterInterruption(StrEnum):
    """What becomes of the task of an attempt that was interrupted."""

    CANCELED = "canceled"
    """A cancel was waiting for the attempt to stop: the task ends CANCELED."""
    REQUEUED = "requeued"
    """The task runs again; the interrupted attempt counts as one of its attempts."""
    GIVEN_BACK = "given_back"
    """The task runs again; its worker gave the attempt back, so it does not count."""
    GAVE_UP = "gave_up"
    """No attempts remain: the task fails."""


def after_interruption(
    task_status: OperationStatus, attempts: int, max_attempts: int, *, given_back: bool
) -> AfterInterruption:
    """What becomes of a task (now `task_status`) whose attempt `attempts` was interrupted."""
    if task_status is OperationStatus.CANCELING:
        return AfterInterruption.CANCELED
    if given_back:
        return AfterInterruption.GIVEN_BACK
    if attempts < max_attempts:
        return AfterInterruption.REQUEUED
    return AfterInterruption.GAVE_UP


def interrupted_status(current: SessionActionStatus, *, given_back: bool) -> SessionActionStatus:
    """The status an interrupted attempt (now `current`) ends in.

    An attempt given back before it started was never attempted; any other ends
    INTERRUPTED.
    """
    if given_back and current is SessionActionStatus.ASSIGNED:
        return SessionActionStatus.NEVER_ATTEMPTED
    return SessionActionStatus.INTERRUPTED


def gave_up_message(detail: str, attempts: int) -> str:
    """The error message of a task that failed because its last attempt was interrupted."""
    return f"{detail}; gave up after {attempts} attempt(s)"
