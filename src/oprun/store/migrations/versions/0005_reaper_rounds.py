"""reaper rounds: when the last reaper round ran, so a later one can tell the server's own silence

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rounds = op.create_table(
        "reaper_rounds",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(rounds, [{"id": 1, "at": None}])  # its one row: no round yet


def downgrade() -> None:
    op.drop_table("reaper_rounds")
