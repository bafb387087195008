"""Use cases of database maintenance: back up and restore a SQLite database.

The server may be running during a backup; a restore needs it stopped. A
PostgreSQL database is backed up with `pg_dump` and restored with `pg_restore`
(the commands refuse it, saying so).
"""

from __future__ import annotations

from pathlib import Path

from oprun.store import backup as _backup


def backup_database(database_url: str, destination: Path) -> int:
    """Write a consistent copy of the SQLite database to `destination`; its size in bytes.

    Raises:
        ValidationError: not a SQLite database (PostgreSQL has `pg_dump`), or none there.
        Conflict: `destination` exists.
    """
    return _backup.backup(database_url, destination)


def restore_database(backup_file: Path, database_url: str) -> str | None:
    """Replace the SQLite database with `backup_file`; the backup's schema revision.

    Raises:
        ValidationError: not a SQLite database, or `backup_file` is not a sound oprun
            database this version knows.
        Conflict: a server (any process) still has the database open.
    """
    return _backup.restore(backup_file, database_url)
