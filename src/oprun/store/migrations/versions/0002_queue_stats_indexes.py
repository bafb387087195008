"""queue stats indexes: unfinished tasks by queue and status, finished tasks by end time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('QUEUED', 'SCHEDULED', 'RUNNING', 'CANCELING')"
ENDED = "status IN ('SUCCEEDED', 'FAILED', 'CANCELED')"


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_queue_active",
            ["queue_id", "status"],
            unique=False,
            postgresql_where=sa.text(ACTIVE),
            sqlite_where=sa.text(ACTIVE),
        )
        batch_op.create_index(
            "ix_tasks_queue_ended",
            ["queue_id", "updated_at", "status"],
            unique=False,
            postgresql_where=sa.text(ENDED),
            sqlite_where=sa.text(ENDED),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_tasks_queue_ended",
            postgresql_where=sa.text(ENDED),
            sqlite_where=sa.text(ENDED),
        )
        batch_op.drop_index(
            "ix_tasks_queue_active",
            postgresql_where=sa.text(ACTIVE),
            sqlite_where=sa.text(ACTIVE),
        )
