"""Persistence: the `Store` protocol, over SQLite or PostgreSQL as the database URL says."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from oprun.store.migrate import upgrade
from oprun.store.protocol import NewOperation, Store
from oprun.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from oprun.store.postgres import PostgresStore

    # Both backends implement the protocol: mypy fails here when one drifts from it.
    _SQLITE: type[Store] = SqliteStore
    _POSTGRES: type[Store] = PostgresStore

__all__ = ["NewOperation", "PostgresStore", "SqliteStore", "Store", "open_store", "sqlite_url"]


def __getattr__(name: str) -> Any:
    # psycopg takes 0.2 s to import: a server on SQLite never pays for it.
    if name == "PostgresStore":
        from oprun.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from oprun.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")
