"""`oprun db backup` and `oprun db restore`: a SQLite database copied out and back.

(`oprun db upgrade` lives with the server commands in `serve.py`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="sqlite:///path (env OPRUN_DATABASE_URL; default: the data directory's)."),
]


def _url(database_url: str | None) -> str:
    from oprun.service.settings import Settings

    return database_url or Settings.load().database_url


def register(db: typer.Typer) -> None:
    """Add `backup` and `restore` to the `db` command group."""

    @db.command("backup")
    def db_backup(
        path: Annotated[Path, typer.Argument(help="The backup file to write (a new file).")],
        database_url: DatabaseUrl = None,
    ) -> None:
        """Copy a SQLite database to PATH, consistent, while the server runs.

        PostgreSQL is backed up with pg_dump (see the docs, Running in production).

        Example: oprun db backup ~/backups/oprun-$(date +%F).db
        """
        from oprun.service.database import backup_database

        size = backup_database(_url(database_url), path.expanduser())
        typer.echo(f"backed up to {path} ({size} bytes)")

    @db.command("restore")
    def db_restore(
        path: Annotated[Path, typer.Argument(help="A file `oprun db backup` wrote.")],
        database_url: DatabaseUrl = None,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Replace the database without asking.")
        ] = False,
    ) -> None:
        """Replace a SQLite database with the backup at PATH; stop the server first.

        Refused while any process has the database open. The next `oprun server` (or
        `oprun db upgrade`) upgrades a backup of an older schema.

        Example: oprun db restore ~/backups/oprun-2026-11-30.db --yes
        """
        from oprun.service.database import restore_database

        url = _url(database_url)
        if not yes:
            typer.confirm(f"Replace the database at {url} with {path}?", abort=True)
        revision = restore_database(path.expanduser(), url)
        typer.echo(f"restored {path} into {url} (schema revision {revision or 'none'})")
