"""task page index: a page of an operation's tasks is one range of an index

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 12:00:00.000000

- `ix_tasks_operation_id` (operation_id, id) replaces `ix_tasks_operation`
  (operation_id): `GET /v1/operations/{id}/tasks` pages an operation's tasks in id
  order, and with the id in the index a page after a cursor is read in order, without
  sorting every task of the operation first. It serves every lookup by operation the
  old index served, so that one is dropped rather than kept for writes to maintain.

On PostgreSQL the index is built with CREATE INDEX CONCURRENTLY, outside the migration's
transaction, so claims and reports go on while it builds (see docs/operations.md,
Upgrades); the old index is dropped only once the new one is there. Only indexes
change: a server of the previous release keeps working on the upgraded schema.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tasks_operation_id",
            "tasks",
            ["operation_id", "id"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.drop_index("ix_tasks_operation", table_name="tasks", postgresql_concurrently=True)


def downgrade() -> None:
    op.create_index("ix_tasks_operation", "tasks", ["operation_id"], unique=False)
    op.drop_index("ix_tasks_operation_id", table_name="tasks")
