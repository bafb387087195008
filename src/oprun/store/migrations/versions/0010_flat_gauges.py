"""flat gauges: the metrics scrape, the Queues page and retention read no history

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00.000000

- `ix_operations_project_status_queue` (project_id, status, id, queue_id) replaces
  `ix_operations_project_status` (project_id, status, id): `/metrics` counts each
  queue's unfinished operations from the index alone, without reading a row of the
  table for its queue. It serves every query the old index served (a queue id never
  changes, so no write moves an entry that did not move before).
- `ix_tasks_queue_active_available` (queue_id, status, available_at) over the
  unfinished tasks replaces `ix_tasks_queue_active` (queue_id, status): a queue's
  longest-waiting task is the first QUEUED entry of its range, one lookup per queue,
  where the scrape read every waiting task. `available_at` was already indexed
  (`ix_tasks_queued_available`), so the writes that move it moved an index entry before.
- `ix_events_deleted` (project_id, seq) over the `operation.deleted` events only: the
  processes that follow retention boundaries and queue throughput look for deletions
  since their last read, and read those events alone instead of every event since.

On PostgreSQL the indexes are built with CREATE INDEX CONCURRENTLY, outside the
migration's transaction, so claims and reports go on while they build (see
docs/operations.md, Upgrades); each old index is dropped only once its successor is
there. Only indexes change: a server of the previous release keeps working on the
upgraded schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('QUEUED', 'SCHEDULED', 'RUNNING', 'CANCELING')"
DELETED = "type = 'operation.deleted'"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_operations_project_status_queue",
            "operations",
            ["project_id", "status", "id", "queue_id"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_operations_project_status",
            table_name="operations",
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_tasks_queue_active_available",
            "tasks",
            ["queue_id", "status", "available_at"],
            unique=False,
            postgresql_where=sa.text(ACTIVE),
            sqlite_where=sa.text(ACTIVE),
            postgresql_concurrently=True,
        )
        op.drop_index("ix_tasks_queue_active", table_name="tasks", postgresql_concurrently=True)
        op.create_index(
            "ix_events_deleted",
            "events",
            ["project_id", "seq"],
            unique=False,
            postgresql_where=sa.text(DELETED),
            sqlite_where=sa.text(DELETED),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_events_deleted", table_name="events")
    op.create_index(
        "ix_tasks_queue_active",
        "tasks",
        ["queue_id", "status"],
        unique=False,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.drop_index("ix_tasks_queue_active_available", table_name="tasks")
    op.create_index(
        "ix_operations_project_status",
        "operations",
        ["project_id", "status", "id"],
        unique=False,
    )
    op.drop_index("ix_operations_project_status_queue", table_name="operations")
