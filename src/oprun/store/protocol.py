"""The store's contract: every operation the services need, and nothing of how it is done.

Services, the API and the web UI are typed against `Store`; `open_store` returns
one. The SQL backends (`SqliteStore`, `PostgresStore`) implement it, and mypy
checks that they do (see the end of `oprun.store`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from oprun.domain.audit import AuditEntry, AuditRecord
from oprun.domain.models import (
    Action,
    ActionDefinition,
    Event,
    InvocationSource,
    LogRecord,
    Operation,
    Project,
    Queue,
    QueueStats,
    SessionAction,
    Task,
    Token,
    Worker,
)
from oprun.domain.plan import StepPlan
from oprun.domain.protocol import Assignment, Held, Report, ReportOutcome, SessionReport
from oprun.domain.retention import Boundary, RetentionSettings
from oprun.domain.roles import Role
from oprun.domain.silence import SilenceRule
from oprun.domain.status import OperationStatus, WorkerStatus
from oprun.store.calls import DatabaseCalls
from oprun.store.notify import Notifier
from oprun.store.stats import PoolStats, ServerStats


@dataclass(frozen=True)
class NewOperation:
    """A validated invocation, ready to be written."""

    project_id: str
    action: Action
    queue: str
    parameters: dict[str, Any]
    params_digest: str
    created_by: str
    source_type: InvocationSource
    source_id: str
    idempotency_key: str | None
    timeout: float | None
    plan: Sequence[StepPlan] = ()
    """The operation's steps and tasks; empty: one task carrying `parameters`."""


class Claimed(list[Assignment]):
    """What a claim took; `refused` when the worker may not claim at all.

    A worker that is unknown, draining, stopped or silent past its lease takes
    nothing and is `refused`; an empty claim that is not refused found the worker
    live and simply no work it could take, so its caller need not read it again.
    `limited`: one of the worker's queues has a concurrency limit, so room may free
    up for it without any wake-up being published (a task there ending).
    `exhaustive`: the claim took every waiting task of its worker's queues that it
    could see (it passed none over for requirements or a limit) and saw every one
    that any worker could (its worker is quarantined from no operation, none of its
    queues is limited). Then, when it took less than it asked, a claim of another
    worker serving no other queue would find nothing either, until work is published.
    """

    def __init__(
        self,
        taken: Sequence[Assignment] = (),
        *,
        refused: bool = False,
        limited: bool = False,
        exhaustive: bool = False,
    ) -> None:
        super().__init__(taken)
        self.refused = refused
        self.limited = limited
        self.exhaustive = exhaustive


class Store(Protocol):
    """Persistence of projects, actions, operations and their work, with wake-ups.

    Every method raises `Unavailable` when the database cannot serve right now
    (unreachable, locked, full), never a driver's exception.
    """

    @property
    def notifier(self) -> Notifier:
        """Wake-ups of waiters in this process when what they wait on changes."""
        ...

    @property
    def serial_writes(self) -> bool:
        """Whether write transactions take the database one at a time (SQLite).

        There, a long transaction delays every claim and report behind it.
        """
        ...

    def now(self) -> float:
        """The store's clock (epoch seconds), for timeouts and ages."""
        ...

    def close(self) -> None:
        """Release connections and listeners."""
        ...

    def schema_revision(self) -> str | None:
        """The database's schema revision (None when it was never migrated)."""
        ...

    # -- projects and tokens -------------------------------------------------------------
    def create_project(self, name: str, *, audit: AuditEntry | None = None) -> Project:
        """Create a project with its `default` queue (recording `audit` about it)."""
        ...

    def get_project(self, project_id: str) -> Project:
        """One project, or NotFound."""
        ...

    def first_project(self) -> Project:
        """The oldest project (the one `oprun up` bootstrapped), or NotFound."""
        ...

    def count_admins(self, project_id: str) -> int:
        """How many live admin tokens a project has."""
        ...

    def count_tokens(self) -> int:
        """How many tokens exist in all projects (zero on a fresh database)."""
        ...

    def create_token(
        self,
        project_id: str,
        name: str,
        role: Role,
        secret_hash: str,
        expires_in: float | None = None,
        *,
        audit: AuditEntry | None = None,
    ) -> Token:
        """Store a token by the hash of its secret, expiring `expires_in` seconds from now.

        With `audit`, the row (naming the new token) is written in the same transaction.
        """
        ...

    def rotate_token(
        self,
        project_id: str,
        token_id: str,
        secret_hash: str,
        *,
        audit: AuditEntry | None = None,
    ) -> Token:
        """Replace a live token by a new one (same name, role and expiry) and revoke it.

        With `audit`, the row (naming both tokens) is written in the same transaction.
        """
        ...

    def touch_token(self, token_id: str, every: float) -> None:
        """Set a token's `last_used_at` to now, unless it was set less than `every` s ago."""
        ...

    def token_by_hash(self, secret_hash: str) -> Token | None:
        """The live token whose secret hashes to `secret_hash`."""
        ...

    def list_tokens(
        self, project_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[Token]:
        """Up to `limit` tokens of a project, oldest first, newer than the id `after`."""
        ...

    def revoke_token(
        self, project_id: str, token_id: str, *, audit: AuditEntry | None = None
    ) -> Token:
        """Revoke a token of the project, or NotFound; `audit` is recorded with it."""
        ...

    # -- queues and actions --------------------------------------------------------------
    def configure_queue(
        self,
        project_id: str,
        name: str,
        priority: int,
        max_concurrency: int | None,
        *,
        audit: AuditEntry | None = None,
    ) -> Queue:
        """Set a queue's priority and concurrency limit (the queue is created if new).

        With `audit`, the row (with the settings before and after) is written with it.
        """
        ...

    def queue_stats(
        self, project_id: str, after: tuple[int, str] | None = None, limit: int | None = None
    ) -> list[QueueStats]:
        """Queues of a project with depth, running work and last hour's throughput.

        Highest priority first, then by name; the `limit` after `(priority, name)`
        `after`, every queue when both are None.
        """
        ...

    def save_action(
        self,
        project_id: str,
        definition: ActionDefinition,
        guard: Callable[[ActionDefinition | None, ActionDefinition], None] | None = None,
        actor: str | None = None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[Action, bool]:
        """Save a new version of an action unless an equal one exists; True if created.

        `guard(latest, definition)` runs under the action's lock before a new version is
        written and may raise to refuse it; the `action.saved` event names `actor`. With
        `audit`, a new version is also recorded in the audit log, in the same transaction.
        """
        ...

    def get_action(self, project_id: str, name: str, version: int | None = None) -> Action:
        """The given (default latest) version of an action, or NotFound."""
        ...

    def list_actions(self, project_id: str, after: str | None, limit: int) -> list[Action]:
        """Latest version of each action, by name, after the name `after`."""
        ...

    def list_action_versions(
        self, project_id: str, name: str, after: int | None, limit: int
    ) -> list[Action]:
        """Every version of one action, newest first, older than version `after`."""
        ...

    # -- workers -------------------------------------------------------------------------
    def register_worker(
        self,
        project_id: str,
        name: str,
        hostname: str,
        queues: Sequence[str],
        capabilities: dict[str, Any],
    ) -> Worker:
        """Register a new worker (a restarted agent registers afresh)."""
        ...

    def get_worker(self, project_id: str, worker_id: str) -> Worker:
        """One worker of the project, or NotFound."""
        ...

    def list_workers(self, project_id: str, after: str | None, limit: int) -> list[Worker]:
        """Workers of a project, newest first, older than the id `after`."""
        ...

    # -- operations ----------------------------------------------------------------------
    def create_operations(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        """Write operations and their tasks in one transaction; True for each one created."""
        ...

    def find_cached_success(self, action_version_id: str, params_digest: str) -> str | None:
        """The id of a SUCCEEDED operation of this version with these parameters."""
        ...

    def find_by_idempotency_key(self, project_id: str, key: str) -> str | None:
        """The id of the project's operation created with this idempotency key."""
        ...

    def cancel_operation(self, project_id: str, operation_id: str, detail: str) -> None:
        """Cancel an operation: waiting tasks at once, running ones via their workers."""
        ...

    def delete_operation(self, project_id: str, operation_id: str) -> None:
        """Delete a finished operation and everything recorded about it."""
        ...

    def get_operation(self, project_id: str, operation_id: str) -> Operation:
        """One operation with its status history, or NotFound (also for other projects)."""
        ...

    def list_operations(
        self,
        project_id: str,
        *,
        status: OperationStatus | None = None,
        action: str | None = None,
        created_by: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[Operation]:
        """Operations of a project matching the filters, newest first, older than `before`."""
        ...

    def list_tasks(
        self, project_id: str, operation_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[Task]:
        """Up to `limit` tasks of one operation, oldest first, newer than the id `after`."""
        ...

    def list_session_actions(
        self, project_id: str, operation_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[SessionAction]:
        """Up to `limit` attempts of an operation's work, oldest first, newer than `after`."""
        ...

    def find_session_actions(
        self,
        project_id: str,
        *,
        operation_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[SessionAction]:
        """Session actions matching every filter given, oldest first, after the id `after`."""
        ...

    def get_session_action(self, project_id: str, session_action_id: str) -> SessionAction:
        """One session action with its status history, or NotFound."""
        ...

    def list_logs(
        self, project_id: str, operation_id: str, after: int, limit: int
    ) -> list[LogRecord]:
        """Log records of an operation after sequence number `after`."""
        ...

    def list_events(self, project_id: str, after: int, limit: int) -> list[Event]:
        """Events of a project after sequence number `after`, oldest first."""
        ...

    def last_event_id(self, project_id: str) -> int:
        """The newest event's id in a project (0 when none)."""
        ...

    # -- the worker protocol -------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        project_id: str,
        queue_names: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        operation_id: str | None = None,
        session_id: str | None = None,
        step_id: str | None = None,
    ) -> Claimed:
        """Take up to `limit` waiting tasks for a worker, each under a new lease."""
        ...

    def heartbeat(
        self, worker_id: str, held: Sequence[Held], status: WorkerStatus, lease_seconds: float
    ) -> tuple[list[str], list[str]]:
        """Renew a worker's leases; the held session actions to cancel, and those it lost."""
        ...

    def apply_reports(self, worker_id: str, reports: Sequence[Report]) -> list[ReportOutcome]:
        """Apply a worker's reports in order; each is accepted or refused on its own."""
        ...

    def apply_session_reports(
        self, worker_id: str, reports: Sequence[SessionReport], ended: Sequence[str] = ()
    ) -> list[ReportOutcome]:
        """Record a worker's session-level actions in order, then close `ended` sessions."""
        ...

    def abandon_worker(self, worker_id: str) -> int:
        """End the attempts of a worker that stopped answering (they count); how many."""
        ...

    def release_worker(self, worker_id: str) -> int:
        """Give back what a stopped worker holds, without spending attempts; how many."""
        ...

    # -- the reaper ----------------------------------------------------------------------
    def reap(
        self, worker_silence: float, batch: int = 500, *, silence: SilenceRule | None = None
    ) -> int:
        """Interrupt attempts whose lease lapsed, mark silent workers; how many ended.

        With `silence`, the server's own silence since the last round first moves leases
        and heartbeats forward (`oprun.domain.silence`), and the round is recorded.
        """
        ...

    def time_out_operations(self, batch: int = 100) -> int:
        """Cancel operations past their deadline (they end FAILED, TIMEOUT); how many."""
        ...

    def wake_for_due_retries(self, since: float) -> float:
        """Wake claims of projects whose delayed tasks came due after `since`; the new since."""
        ...

    # -- operators -----------------------------------------------------------------------
    def server_stats(self) -> ServerStats:
        """Unfinished work and oldest wait per queue, workers by status: from indexes only."""
        ...

    def pool_stats(self) -> list[PoolStats]:
        """The use of the store's connection pools (no I/O)."""
        ...

    def database_calls(self) -> DatabaseCalls:
        """Statements and round trips this process sent the database (no I/O)."""
        ...

    # -- retention -----------------------------------------------------------------------
    def get_retention(self, project_id: str) -> RetentionSettings:
        """The project's own retention settings (null fields: the server's default), or NotFound."""
        ...

    def set_retention(
        self, project_id: str, settings: RetentionSettings, *, audit: AuditEntry | None = None
    ) -> RetentionSettings:
        """Replace the project's own retention settings, or NotFound; `audit` is recorded."""
        ...

    def list_retention(self) -> list[tuple[str, RetentionSettings]]:
        """Every project's id with its own retention settings."""
        ...

    def oldest_kept(self, project_id: str, keep: int) -> Boundary | None:
        """The oldest of the project's `keep` newest finished operations (None: fewer exist)."""
        ...

    def purge_operations(self, project_id: str, before: Boundary, limit: int) -> int:
        """Delete up to `limit` finished operations sorting before `before`, with all their rows."""
        ...

    def purge_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest events recorded before `before` (never the newest)."""
        ...

    # -- audit log -----------------------------------------------------------------------
    def record_audit(self, entry: AuditEntry) -> None:
        """Write one audit row in a transaction of its own (a change records its own)."""
        ...

    def list_audit(
        self,
        project_id: str,
        *,
        server_level: bool = False,
        before: int | None = None,
        limit: int = 50,
        kind: str | None = None,
        actor_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[AuditRecord]:
        """Up to `limit` audit rows of a project, newest first, older than the id `before`.

        With `server_level`, the server's own rows (project null) too. `since` (inclusive)
        and `until` (exclusive) bound `at`, in epoch seconds.
        """
        ...
