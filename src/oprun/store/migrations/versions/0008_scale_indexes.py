"""scale indexes: periodic checks and filtered pages read only their rows, at any size

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:00:00.000000

- `ix_operations_deadline_pending` replaces `ix_operations_deadline`: it holds only the
  unfinished operations that have a deadline, so the reaper's timeout check no longer
  walks every finished operation whose deadline has passed.
- `ix_tasks_queued_available`: waiting tasks by the time they become ready, for the
  reaper's due-retry check.
- `ix_operations_project_creator` and `ix_operations_project_action_status`: a page of
  operations filtered by creator, or by action and status, is one range of an index.

On PostgreSQL the indexes are built with CREATE INDEX CONCURRENTLY, outside the
migration's transaction, so claims and reports go on while they build (see
docs/operations.md, Upgrades). Only indexes change: a server of the previous release
keeps working on the upgraded schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING_DEADLINE = "ended_at IS NULL AND deadline_at IS NOT NULL"
QUEUED = "status = 'QUEUED'"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_operations_deadline_pending",
            "operations",
            ["deadline_at"],
            unique=False,
            postgresql_where=sa.text(PENDING_DEADLINE),
            sqlite_where=sa.text(PENDING_DEADLINE),
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_operations_deadline", table_name="operations", postgresql_concurrently=True
        )
        op.create_index(
            "ix_tasks_queued_available",
            "tasks",
            ["available_at"],
            unique=False,
            postgresql_where=sa.text(QUEUED),
            sqlite_where=sa.text(QUEUED),
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_operations_project_creator",
            "operations",
            ["project_id", "created_by", "id"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_operations_project_action_status",
            "operations",
            ["project_id", "action_name", "status", "id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_operations_project_action_status", table_name="operations")
    op.drop_index("ix_operations_project_creator", table_name="operations")
    op.drop_index("ix_tasks_queued_available", table_name="tasks")
    op.create_index("ix_operations_deadline", "operations", ["deadline_at"], unique=False)
    op.drop_index("ix_operations_deadline_pending", table_name="operations")
