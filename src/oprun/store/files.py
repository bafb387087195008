"""Database files readable by their owner alone.

A SQLite database holds token hashes, parameters and logs: oprun creates its file with
mode 0600 before SQLite opens it, and SQLite gives the `-wal`, `-shm` and `-journal`
files it makes beside it the database file's mode. A file that exists already (one the
user made, or restored) keeps the mode it has.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE = 0o600
"""Read and write for the owner, nothing for anyone else."""


def create_private(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless it exists; whether it was created.

    A missing folder is left to whoever opens the file next to report.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except OSError:  # it exists (kept as it is), or its folder does not
        return False
    os.close(fd)
    return True


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL; None for another database, or one in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database or ""
    if not name or name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
        return None
    return Path(name)


def create_private_database(url: str) -> None:
    """Before SQLite creates the database file of `url`, create it with mode 0600.

    An empty file is an empty SQLite database. Nothing happens for PostgreSQL, a
    database in memory or a file that exists.
    """
    path = sqlite_path(url)
    if path is not None:
        create_private(path)
