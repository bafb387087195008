"""Persistence: one store over SQLite or PostgreSQL, chosen by the database URL."""

from __future__ import annotations

from pathlib import Path

from oprun.store.invocations import NewOperation
from oprun.store.migrate import upgrade
from oprun.store.postgres import PostgresStore
from oprun.store.reads import ReadQueries as Store
from oprun.store.sqlite import SqliteStore

__all__ = ["NewOperation", "PostgresStore", "SqliteStore", "Store", "open_store", "sqlite_url"]


def sqlite_url(path: str | Path) -> str:
    """The database URL of a SQLite file."""
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store at `url` (``sqlite:///path`` or ``postgresql://...``).

    With `migrate`, the schema is brought up to date first.
    """
    if migrate:
        upgrade(url)
    if url.startswith("sqlite"):
        return SqliteStore(url)
    if url.startswith(("postgresql", "postgres")):
        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")
