"""The tables of oprun, as SQLAlchemy Core metadata (the Alembic migrations must equal this).

Times are seconds since the epoch (double precision), taken from the database's
clock on PostgreSQL and from the server's clock on SQLite (one host by design).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
Id = String(64)
Seq = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

projects = Table(
    "projects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # the project's own retention of finished operations; null: the server's default
    Column("retention_days", Float),
    Column("retention_max_operations", Integer),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("expires_at", Float),
    Column("last_used_at", Float),
)

queues = Table(
    "queues",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("max_concurrency", Integer),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_queues_project_name"),
)

actions = Table(
    "actions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("project_id", "name", name="uq_actions_project_name"),
)

action_versions = Table(
    "action_versions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("action_id", Id, ForeignKey("actions.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(80), nullable=False),
    Column("definition", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("action_id", "version", name="uq_action_versions_version"),
    UniqueConstraint("action_id", "digest", name="uq_action_versions_digest"),
)

operations = Table(
    "operations",
    metadata,
    Column("id", Id, primary_key=True),
    # No foreign keys to the project, action, version and queue: PostgreSQL checks a key
    # row by row, and the write checks each kind of operation once instead (migration 0012).
    Column("project_id", Id, nullable=False),
    Column("action_id", Id, nullable=False),
    Column("action_version_id", Id, nullable=False),
    Column("action_name", String(128), nullable=False),
    Column("action_version", Integer, nullable=False),
    Column("action_digest", String(80), nullable=False),
    Column("queue_id", Id, nullable=False),
    Column("queue_name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("step_code", String(64)),
    Column("progress_percent", Float),
    Column("progress_message", Text),
    Column("n_queued", Integer, nullable=False, default=0),
    Column("n_running", Integer, nullable=False, default=0),
    Column("n_succeeded", Integer, nullable=False, default=0),
    Column("n_failed", Integer, nullable=False, default=0),
    Column("n_canceled", Integer, nullable=False, default=0),
    Column("parameters", Json, nullable=False),
    Column("params_digest", String(80), nullable=False),
    Column("result", Json),
    Column("error", Json),
    Column("exit_reason", String(64)),
    Column("created_by", String(128), nullable=False),
    Column("source_type", String(16), nullable=False),
    Column("source_id", String(128), nullable=False),
    Column("idempotency_key", String(256)),
    Column("timeout", Float),
    Column("deadline_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("worker_id", Id),
    Column("log_bytes", BigInteger, nullable=False, default=0),
    # step -> steps it waits for; null when the steps have no order (nearly always)
    Column("steps", Json),
    # the action's retry policy and quarantine threshold, copied at invocation
    Column("policy", Json),
    # what a worker must have to run the tasks (null: any worker)
    Column("requirements", Json),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    UniqueConstraint("project_id", "idempotency_key", name="uq_operations_idempotency"),
)
# A page of operations is a range of one of these, newest first (`list_operations`):
# each leads with the filters it serves, by equality, and ends in the id it is ordered
# by, so a page reads its rows and no others, however many operations the project has.
Index("ix_operations_project_id", operations.c.project_id, operations.c.id.desc())
# The queue id trails the status index so that `/metrics` counts the unfinished
# operations of each queue from the index alone (it never changes: no write moves it).
Index(
    "ix_operations_project_status_queue",
    operations.c.project_id,
    operations.c.status,
    operations.c.id,
    operations.c.queue_id,
)
Index(
    "ix_operations_project_action",
    operations.c.project_id,
    operations.c.action_name,
    operations.c.id,
)
Index(
    "ix_operations_project_action_status",
    operations.c.project_id,
    operations.c.action_name,
    operations.c.status,
    operations.c.id,
)
Index(
    "ix_operations_project_creator",
    operations.c.project_id,
    operations.c.created_by,
    operations.c.id,
)
Index(
    "ix_operations_cache",
    operations.c.action_version_id,
    operations.c.params_digest,
    operations.c.status,
)
OPERATION_PENDING_DEADLINE = text("ended_at IS NULL AND deadline_at IS NOT NULL")
"""The literal predicate of `ix_operations_deadline_pending`; the reaper's query repeats it
word for word so that SQLite uses that partial index."""
# The reaper's timeout check reads only this: the unfinished operations that have a
# deadline (never the finished ones, whose deadlines have all passed).
Index(
    "ix_operations_deadline_pending",
    operations.c.deadline_at,
    postgresql_where=OPERATION_PENDING_DEADLINE,
    sqlite_where=OPERATION_PENDING_DEADLINE,
)
# The retention purge walks a project's finished operations, oldest first, from here.
Index(
    "ix_operations_ended",
    operations.c.project_id,
    operations.c.ended_at,
    operations.c.id,
    postgresql_where=operations.c.ended_at.isnot(None),
    sqlite_where=operations.c.ended_at.isnot(None),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True),
    # No foreign key to the operation (migration 0012): tasks are written with their
    # operation, in one statement, and deleted before it.
    Column("operation_id", Id, nullable=False),
    Column("project_id", Id, nullable=False),
    Column("queue_id", Id, nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("parameters", Json, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("available_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
# A page of an operation's tasks (oldest first, after a cursor) is one range of this.
Index("ix_tasks_operation_id", tasks.c.operation_id, tasks.c.id)
WAITING_ON_STEPS = 1.0e18
"""`available_at` of a task whose step waits for other steps: never, until released."""
# Claims read only this partial index: it holds just the rows waiting for a worker.
Index(
    "ix_tasks_claimable",
    tasks.c.queue_id,
    tasks.c.priority.desc(),
    tasks.c.id,
    postgresql_where=tasks.c.status == "QUEUED",
    sqlite_where=tasks.c.status == "QUEUED",
)
TASK_QUEUED = text("status = 'QUEUED'")
"""The literal predicate of `ix_tasks_queued_available`."""
# The reaper wakes claims for retries come due from this: waiting tasks by the time they
# become ready, so a round reads the ones due since the last round, not every waiting task.
Index(
    "ix_tasks_queued_available",
    tasks.c.available_at,
    postgresql_where=TASK_QUEUED,
    sqlite_where=TASK_QUEUED,
)
# The Queues page counts from these two partial indexes, never from a scan of the table:
# one holds just the unfinished tasks (depth and running per queue; with `available_at`,
# a queue's longest-waiting task is its first QUEUED entry), the other the finished ones
# by the time they ended (a task's `updated_at` stops moving once it ends).
TASK_ACTIVE = text("status IN ('QUEUED', 'SCHEDULED', 'RUNNING', 'CANCELING')")
TASK_ENDED = text("status IN ('SUCCEEDED', 'FAILED', 'CANCELED')")
"""Literal predicates of the partial indexes; queries repeat them word for word so that
SQLite (which matches a partial index's WHERE by its terms) can use the index."""
Index(
    "ix_tasks_queue_active_available",
    tasks.c.queue_id,
    tasks.c.status,
    tasks.c.available_at,
    postgresql_where=TASK_ACTIVE,
    sqlite_where=TASK_ACTIVE,
)
Index(
    "ix_tasks_queue_ended",
    tasks.c.queue_id,
    tasks.c.updated_at,
    tasks.c.status,
    postgresql_where=TASK_ENDED,
    sqlite_where=TASK_ENDED,
)

workers = Table(
    "workers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("queues", Json, nullable=False),
    Column("capabilities", Json, nullable=False),
    Column("last_heartbeat_at", Float),
    Column("created_at", Float, nullable=False),
)
Index("ix_workers_project", workers.c.project_id, workers.c.id)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project_id", Id, nullable=False),
    Column("operation_id", Id, ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
    Column("worker_id", Id, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
)
Index("ix_sessions_operation", sessions.c.operation_id)

session_actions = Table(
    "session_actions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("session_id", Id, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Id, nullable=False),
    Column("operation_id", Id, nullable=False),
    Column("task_id", Id),
    Column("worker_id", Id, nullable=False),
    Column("status", String(16), nullable=False),
    Column("lease_epoch", Integer, nullable=False),
    Column("lease_expires_at", Float),
    Column("definition", Json, nullable=False),
    Column("progress_percent", Float),
    Column("progress_message", Text),
    Column("process_exit_code", Integer),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("worker_updated_at", Float),
)
# Lists of session actions are pages ordered by id: each index ends in it.
Index("ix_session_actions_operation_id", session_actions.c.operation_id, session_actions.c.id)
Index("ix_session_actions_session", session_actions.c.session_id, session_actions.c.id)
Index("ix_session_actions_task", session_actions.c.task_id, session_actions.c.id)
Index("ix_session_actions_worker", session_actions.c.worker_id)
Index(
    "ix_session_actions_leased",
    session_actions.c.lease_expires_at,
    postgresql_where=session_actions.c.lease_expires_at.isnot(None),
    sqlite_where=session_actions.c.lease_expires_at.isnot(None),
)

quarantines = Table(
    "quarantines",
    metadata,
    Column("operation_id", Id, ForeignKey("operations.id", ondelete="CASCADE"), primary_key=True),
    Column("worker_id", Id, primary_key=True),
    Column("created_at", Float, nullable=False),
)
"""Workers that failed too many of an operation's tasks in a row: they take no more of them."""
# Every claim asks whether its worker is quarantined from anything (`Claimed.exhaustive`).
Index("ix_quarantines_worker", quarantines.c.worker_id)

status_history = Table(
    "status_history",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("entity_id", Id, nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text),
    Column("at", Float, nullable=False),
)
Index("ix_status_history_entity", status_history.c.entity_id, status_history.c.seq)

events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("project_id", Id, nullable=False),
    Column("type", String(64), nullable=False),
    Column("entity_id", Id, nullable=False),
    Column("data", Json, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_events_project", events.c.project_id, events.c.seq)
EVENT_DELETED = text("type = 'operation.deleted'")
"""The literal predicate of `ix_events_deleted`; queries repeat it word for word."""
# Processes that keep counts of finished work look for deletions since their last read
# (`oprun.store.deletions`): this holds just those events, however many others come.
Index(
    "ix_events_deleted",
    events.c.project_id,
    events.c.seq,
    postgresql_where=EVENT_DELETED,
    sqlite_where=EVENT_DELETED,
)

logs = Table(
    "logs",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("operation_id", Id, nullable=False),
    Column("session_action_id", Id),
    Column("stream", String(8), nullable=False),
    Column("line", Text, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_logs_operation", logs.c.operation_id, logs.c.seq)

reaper_rounds = Table(
    "reaper_rounds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", Float),
)
"""One row (id 1, made by the migration): when the last reaper round of any API process ran,
on the store's clock (null before the first). A round that finds it too far back knows the
server itself was away (`oprun.domain.silence`)."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    # null: a server-level event (a failed authentication whose token matches no project)
    Column("project_id", Id),
    Column("kind", String(64), nullable=False),
    # the token that acted (null: nobody authenticated); its name and role as they were
    Column("actor_id", Id),
    Column("actor_name", String(128)),
    Column("actor_role", String(16)),
    # the connection's peer address (never X-Forwarded-For) and the request's X-Request-ID
    Column("client", String(128)),
    Column("request_id", String(128)),
    Column("subject", String(256)),
    Column("details", Json, nullable=False),
)
"""Security-relevant events, newest last; read by admins (`oprun.service.audit`). Never
purged with operations: an audit trail outlives what it describes."""
Index("ix_audit_log_project", audit_log.c.project_id, audit_log.c.id)
