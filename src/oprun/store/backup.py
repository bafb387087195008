"""Backups of a SQLite database, online and consistent, and their restore.

A backup copies the database with SQLite's backup API in one step: one read
transaction, so the copy is the database as of one commit, while the server goes
on writing (in WAL mode a reader never blocks a writer). A restore copies a backup
over the database, also through SQLite (so a WAL file left by a crash is never
replayed over the restored pages), and refuses while any process has the
database open. PostgreSQL is backed up with its own tools (`pg_dump`, `pg_restore`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from oprun.domain.errors import Conflict, ValidationError
from oprun.store.files import create_private
from oprun.store.migrate import known_revisions

PG_PRACTICE = (
    "back up PostgreSQL with its own tools: pg_dump -Fc -f oprun.dump URL, and restore "
    "into a new database with pg_restore --no-owner -d NEW_URL oprun.dump "
    "(see the docs' Running in production page)"
)


def sqlite_file(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL; ValidationError for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValidationError(f"not a SQLite database: {PG_PRACTICE}", field="database_url")
    if not parsed.database or parsed.database == ":memory:":
        raise ValidationError(f"{url!r} names no database file", field="database_url")
    return Path(parsed.database)


def backup(url: str, destination: Path) -> int:
    """Copy the SQLite database at `url` to `destination` (a new file, mode 0600); its size.

    The server may be running and writing: the copy is consistent as of one commit.
    It is written beside `destination` and renamed into place once checked, so a
    file at `destination` is always a whole backup.

    Raises:
        ValidationError: `url` is not a SQLite database, or it does not exist.
        Conflict: `destination` exists already.
    """
    source = sqlite_file(url)
    if not source.exists():
        raise ValidationError(f"no database at {source}", field="database_url")
    if destination.exists():
        raise Conflict(f"{destination} exists: back up to a new file", path=str(destination))
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    create_private(partial)  # a backup holds what the database holds: its owner's alone
    with _connect(source, timeout=30) as src, _connect(partial) as dst:
        src.backup(dst)  # all pages in one step: one read transaction, one commit's state
        dst.execute("PRAGMA journal_mode=DELETE")  # the backup is one self-contained file
        _check(dst, partial)
    partial.rename(destination)
    return destination.stat().st_size


def restore(backup_file: Path, url: str) -> str | None:
    """Replace the SQLite database at `url` with `backup_file`; the backup's schema revision.

    The server must be stopped: no process may have the database open. A backup of
    an older schema is upgraded by the next `oprun server` (or `oprun db upgrade`).

    Raises:
        ValidationError: `url` is not SQLite, or `backup_file` is not an oprun database
            this version can run (damaged, or of a newer schema).
        Conflict: a process has the database open (a server still running).
    """
    target = sqlite_file(url)
    if not backup_file.is_file():
        raise ValidationError(f"no backup at {backup_file}", field="backup")
    with _connect(backup_file, read_only=True) as src:
        _check(src, backup_file)
        revision = _revision(src, backup_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        create_private(target)  # only when there is none: an existing file keeps its mode
        with _connect(target) as dst:
            try:
                # Leaving WAL needs the database to itself: it fails while anyone has it open.
                dst.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError as exc:
                raise Conflict(
                    f"the database {target} is in use ({exc}): stop every server using it, "
                    "then restore",
                    path=str(target),
                ) from None
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
    return revision


def _connect(
    path: Path, *, timeout: float = 0.0, read_only: bool = False
) -> contextlib.closing[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    return contextlib.closing(sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None))


def _check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValidationError(f"{path} is not a SQLite database: {exc}", field="backup") from None
    if verdict != "ok":
        raise ValidationError(f"{path} is damaged: {verdict}", field="backup")


def _revision(conn: sqlite3.Connection, path: Path) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        raise ValidationError(f"{path} is not an oprun database", field="backup") from None
    revision = None if row is None else str(row[0])
    if revision is not None and revision not in known_revisions():
        raise ValidationError(
            f"{path} has schema revision {revision}, newer than this oprun knows: restore it "
            "with the oprun version that made it",
            field="backup",
        )
    return revision
