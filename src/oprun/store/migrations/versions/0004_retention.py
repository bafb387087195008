"""retention: a project's own limits; indexes the purge walks and deletes by

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:00:00.000000

The indexes are built with CREATE INDEX CONCURRENTLY on PostgreSQL, outside the
migration's transaction: on a large `operations` table a plain CREATE INDEX would
block every write (and so every claim) while it builds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ENDED = "ended_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("retention_max_operations", sa.Integer(), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_operations_ended",
            "operations",
            ["project_id", "ended_at", "id"],
            unique=False,
            postgresql_where=sa.text(ENDED),
            sqlite_where=sa.text(ENDED),
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_sessions_operation",
            "sessions",
            ["operation_id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_sessions_operation", table_name="sessions")
    op.drop_index("ix_operations_ended", table_name="operations")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("retention_max_operations")
        batch_op.drop_column("retention_days")
