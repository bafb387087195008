"""Alembic environment: runs migrations online, one process at a time on PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from oprun.store.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url, poolclass=pool.NullPool)

with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        # Several API processes may start together; one migrates, the others wait.
        connection.execute(text("SELECT pg_advisory_lock(7150001)"))
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(7150001)"))
        connection.commit()
engine.dispose()
