"""quarantines by worker: a claim asks whether its worker is quarantined at all

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 12:00:00.000000

- `ix_quarantines_worker` (worker_id): every claim asks, in the statement that reads its
  worker and queues, whether the worker is quarantined from any operation (a claim that
  is not, and passed no task over, saw every task any worker serving its queues could
  take: see `Claimed.exhaustive`). The primary key leads with the operation, so without
  this index that question reads the whole table.

On PostgreSQL the index is built with CREATE INDEX CONCURRENTLY, outside the migration's
transaction, so claims and reports go on while it builds (see docs/operations.md,
Upgrades). Only an index is added: a server of the previous release keeps working on
the upgraded schema.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_quarantines_worker",
            "quarantines",
            ["worker_id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_quarantines_worker", table_name="quarantines")
