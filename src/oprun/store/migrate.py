"""Schema migrations with Alembic: `upgrade(url)` brings a database to the newest schema."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from oprun.domain.errors import Conflict
from oprun.store.files import create_private_database

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """The URL with the driver oprun uses for its backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply every migration up to `revision`.

    Raises:
        Conflict: the database's schema is newer than this code knows (a newer oprun
            migrated it): this code must not run on it.
    """
    create_private_database(url)  # before anything opens a new SQLite file: mode 0600
    refuse_unknown_schema(url)
    command.upgrade(alembic_config(url), revision)


@cache
def known_revisions() -> frozenset[str]:
    """Every schema revision this code has a migration for."""
    return frozenset(s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions())


def refuse_unknown_schema(url: str) -> None:
    """Raise `Conflict` when the database's schema revision is not one this code knows.

    That is a database a newer oprun has upgraded (during a rolling upgrade, say): a
    process already running keeps working on it, since migrations only add, but one
    starting now would run code that does not know the schema.
    """
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = current_revision(conn)
    finally:
        engine.dispose()
    if found is not None and found not in known_revisions():
        raise Conflict(
            f"the database schema is at revision {found}, newer than this oprun knows "
            f"(its newest is {head_revision()}): run the oprun version that upgraded it",
            schema=found,
            expected=head_revision(),
        )


@cache
def head_revision() -> str:
    """The newest schema revision of this code: the one `upgrade` brings a database to."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration under {MIGRATIONS}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The schema revision of the database behind `conn` (None when never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()
