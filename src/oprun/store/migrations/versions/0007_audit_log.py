"""audit log: security-relevant events (tokens, action definitions, queues, projects,
retention, failed authentications), kept apart from operations and never purged with them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00.000000

A new table only: a server of the previous release keeps working on the upgraded schema
(it simply writes no audit rows).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_name", sa.String(length=128), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("client", sa.String(length=128), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.String(length=256), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_project", "audit_log", ["project_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_project", table_name="audit_log")
    op.drop_table("audit_log")
