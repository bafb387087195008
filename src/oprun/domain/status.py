"""The status machines: one table of allowed transitions per kind of record.

Every layer uses these tables; the store applies a transition only when the
current status is one of the allowed sources, in the same statement.
"""

from __future__ import annotations

from enum import StrEnum


class OperationStatus(StrEnum):
    """Status of an operation or of one of its tasks."""

    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def can_transition_to(self, other: OperationStatus) -> bool:
        """Whether the machine allows going from this status to `other`."""
        return other in OPERATION_TRANSITIONS[self]

    def is_terminal(self) -> bool:
        """Whether this status is final (it absorbs: no transition leaves it)."""
        return self in TERMINAL_OPERATION_STATUSES

    def is_running(self) -> bool:
        """Whether work for this status holds (or is about to hold) a worker."""
        return self in (
            OperationStatus.SCHEDULED,
            OperationStatus.RUNNING,
            OperationStatus.CANCELING,
        )

    def next(self) -> OperationStatus | None:
        """The next status on the happy path, or None for a terminal status."""
        return _OPERATION_NEXT.get(self)

    @classmethod
    def sources_of(cls, target: OperationStatus) -> frozenset[OperationStatus]:
        """Every status from which `target` may be reached."""
        return frozenset(s for s, targets in OPERATION_TRANSITIONS.items() if target in targets)

    def path_to(self, target: OperationStatus) -> list[OperationStatus] | None:
        """The shortest chain of allowed transitions to `target` (without this status).

        `[]` when already there, None when the machine cannot get there. Only an
        explicit cancel enters CANCELING, so the chain never passes through it.
        """
        if target is self:
            return []
        paths: dict[OperationStatus, list[OperationStatus]] = {self: []}
        frontier: list[OperationStatus] = [self]
        while frontier:
            following: list[OperationStatus] = []
            for status in frontier:
                for nxt in sorted(OPERATION_TRANSITIONS[status]):
                    if nxt not in paths:
                        paths[nxt] = [*paths[status], nxt]
                        if nxt is target:
                            return paths[nxt]
                        if nxt is not OperationStatus.CANCELING:
                            following.append(nxt)
            frontier = following
        return None


_O = OperationStatus
OPERATION_TRANSITIONS: dict[OperationStatus, frozenset[OperationStatus]] = {
    _O.QUEUED: frozenset({_O.SCHEDULED, _O.CANCELING, _O.CANCELED}),
    # An attempt lost before it started, with no retries left, fails from SCHEDULED.
    _O.SCHEDULED: frozenset({_O.RUNNING, _O.CANCELING, _O.QUEUED, _O.FAILED}),
    _O.RUNNING: frozenset({_O.SUCCEEDED, _O.FAILED, _O.CANCELING, _O.QUEUED}),
    # Work that finishes before the cancel reaches it keeps its real outcome.
    _O.CANCELING: frozenset({_O.CANCELED, _O.SUCCEEDED, _O.FAILED}),
    _O.SUCCEEDED: frozenset(),
    _O.FAILED: frozenset(),
    _O.CANCELED: frozenset(),
}
TERMINAL_OPERATION_STATUSES = frozenset({_O.SUCCEEDED, _O.FAILED, _O.CANCELED})
_OPERATION_NEXT = {
    _O.QUEUED: _O.SCHEDULED,
    _O.SCHEDULED: _O.RUNNING,
    _O.RUNNING: _O.SUCCEEDED,
    _O.CANCELING: _O.CANCELED,
}


class SessionActionStatus(StrEnum):
    """Status of one attempt of one unit of work on one worker (Deadline's vocabulary)."""

    SCHEDULED = "SCHEDULED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    CANCELED = "CANCELED"
    NEVER_ATTEMPTED = "NEVER_ATTEMPTED"
    RECLAIMING = "RECLAIMING"
    RECLAIMED = "RECLAIMED"

    def can_transition_to(self, other: SessionActionStatus) -> bool:
        """Whether the machine allows going from this status to `other`."""
        return other in SESSION_ACTION_TRANSITIONS[self]

    def is_terminal(self) -> bool:
        """Whether this status is final."""
        return not SESSION_ACTION_TRANSITIONS[self]

    def is_running(self) -> bool:
        """Whether the attempt holds a worker."""
        return self in (
            SessionActionStatus.ASSIGNED,
            SessionActionStatus.RUNNING,
            SessionActionStatus.CANCELING,
            SessionActionStatus.RECLAIMING,
        )

    @classmethod
    def sources_of(cls, target: SessionActionStatus) -> frozenset[SessionActionStatus]:
        """Every status from which `target` may be reached."""
        return frozenset(s for s, t in SESSION_ACTION_TRANSITIONS.items() if target in t)


_S = SessionActionStatus
_SA_ENDINGS = frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELED, _S.INTERRUPTED})
SESSION_ACTION_TRANSITIONS: dict[SessionActionStatus, frozenset[SessionActionStatus]] = {
    _S.SCHEDULED: frozenset({_S.ASSIGNED, _S.NEVER_ATTEMPTED, _S.CANCELED}),
    _S.ASSIGNED: frozenset(
        {_S.RUNNING, _S.RECLAIMING, _S.NEVER_ATTEMPTED, _S.INTERRUPTED, _S.CANCELED}
    ),
    _S.RUNNING: frozenset({_S.CANCELING, _S.RECLAIMING, *_SA_ENDINGS}),
    _S.CANCELING: frozenset({_S.CANCELED, _S.INTERRUPTED, _S.SUCCEEDED, _S.FAILED}),
    _S.RECLAIMING: frozenset({_S.RECLAIMED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.INTERRUPTED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.NEVER_ATTEMPTED: frozenset(),
    _S.RECLAIMED: frozenset(),
}


class WorkerStatus(StrEnum):
    """Status of a registered worker agent."""

    IDLE = "IDLE"
    RUNNING = "RUNNING"
    NOT_RESPONDING = "NOT_RESPONDING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"

    def reported_over(self) -> frozenset[WorkerStatus]:
        """The statuses a worker's own report of this status may replace.

        Heartbeats travel concurrently: a long poll sent before SIGTERM (carrying
        RUNNING) can be answered after the STOPPING one. A worker therefore never goes
        back from stopping to working by a report, and a worker the server gave up on
        (NOT_RESPONDING) stays so until it is told to stop.
        """
        return _REPORTED_OVER[self]


_W = WorkerStatus
_WORKING = frozenset({_W.IDLE, _W.RUNNING})
_REPORTED_OVER: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    _W.IDLE: _WORKING,
    _W.RUNNING: _WORKING,
    _W.STOPPING: _WORKING | {_W.STOPPING},
    _W.STOPPED: _WORKING | {_W.STOPPING, _W.STOPPED},
    _W.NOT_RESPONDING: frozenset(),
}
