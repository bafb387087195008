"""operations and tasks without foreign keys to their parents

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:00:00.000000

A foreign key is checked row by row: PostgreSQL runs a trigger for each new row and
each of its keys, which reads the parent row and locks it FOR KEY SHARE. In a bulk
invoke of 1,000 operations of one action that is 4,000 reads of the same four rows,
a quarter of the statement's time, and 1,000 more for the tasks' key to their
operations. Nothing deletes a project, an action, a version or a queue, and the
statement that creates operations now checks each kind of operation it writes (one
project, action, version and queue) once (`oprun.store.creation_pg`,
`oprun.store.invocations`). Tasks are written only in the statement (or transaction)
that writes their operations, and deleted before them wherever operations are
deleted. So these keys guard nothing the writes do not. The sessions' and
quarantines' keys to their operation stay: neither is on the path of every operation.

On PostgreSQL the constraints are dropped in place. SQLite cannot drop a constraint:
the tables are rebuilt (its rows copied, its indexes made again), with foreign keys
off, as they are on the migration's connection. A server of the previous release
keeps working on the upgraded schema.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PARENTS = (
    ("project_id", "projects", "CASCADE"),
    ("action_id", "actions", None),
    ("action_version_id", "action_versions", None),
    ("queue_id", "queues", None),
)
"""(column, referred table, on delete) of each key dropped."""

TASK_PARENT = ("operation_id", "operations", "CASCADE")
"""The tasks' key to their operation, dropped too."""

NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
"""PostgreSQL's own names for the keys, given to SQLite's unnamed ones to drop them."""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for column, _, _ in PARENTS:
            op.drop_constraint(f"operations_{column}_fkey", "operations", type_="foreignkey")
        op.drop_constraint("tasks_operation_id_fkey", "tasks", type_="foreignkey")
        return
    # Dropping an old table with foreign keys on would delete its children's rows
    # (ON DELETE CASCADE).
    assert bind.execute(text("PRAGMA foreign_keys")).scalar() == 0, "foreign keys are on"
    with op.batch_alter_table("tasks", naming_convention=NAMING, recreate="always") as batch_op:
        batch_op.drop_constraint("tasks_operation_id_fkey", type_="foreignkey")
    with op.batch_alter_table(
        "operations", naming_convention=NAMING, recreate="always"
    ) as batch_op:
        for column, _, _ in PARENTS:
            batch_op.drop_constraint(f"operations_{column}_fkey", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch_op:
        for column, parent, ondelete in PARENTS:
            batch_op.create_foreign_key(
                f"operations_{column}_fkey", parent, [column], ["id"], ondelete=ondelete
            )
    column, parent, ondelete = TASK_PARENT
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.create_foreign_key(
            f"tasks_{column}_fkey", parent, [column], ["id"], ondelete=ondelete
        )
