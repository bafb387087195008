"""steps, retry policy and requirements of operations; quarantines; paged session action indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("steps", Json, nullable=True))
        batch_op.add_column(sa.Column("policy", Json, nullable=True))
        batch_op.add_column(sa.Column("requirements", Json, nullable=True))
    op.create_table(
        "quarantines",
        sa.Column("operation_id", sa.String(length=64), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["operation_id"], ["operations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("operation_id", "worker_id"),
    )
    with op.batch_alter_table("session_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_session_actions_operation")
        batch_op.create_index(
            "ix_session_actions_operation_id", ["operation_id", "id"], unique=False
        )
        batch_op.create_index("ix_session_actions_session", ["session_id", "id"], unique=False)
        batch_op.create_index("ix_session_actions_task", ["task_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_session_actions_task")
        batch_op.drop_index("ix_session_actions_session")
        batch_op.drop_index("ix_session_actions_operation_id")
        batch_op.create_index("ix_session_actions_operation", ["operation_id"], unique=False)
    op.drop_table("quarantines")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_column("requirements")
        batch_op.drop_column("policy")
        batch_op.drop_column("steps")
