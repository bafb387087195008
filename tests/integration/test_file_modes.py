"""Files holding what the database holds are readable by their owner alone (mode 0600).

A SQLite database (token hashes, parameters, results, logs) made by `oprun server`
(`oprun up` opens it the same way), with its `-wal` and `-shm` files, a backup made by
`oprun db backup` and a database `oprun db restore` creates; a database file the user
made keeps the mode they gave it. SQLite alone: PostgreSQL keeps no files of ours.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from oprun.service import open_services
from oprun.service.database import backup_database, restore_database
from oprun.service.settings import Settings
from oprun.store import open_store, sqlite_url

SECRET = "oprun_" + "s3cret" * 8


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask (022): without oprun's care, new files would be world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_its_wal_and_shm_backups_and_restores_are_the_owners_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "oprun.db"
    url = f"sqlite:///{db}"
    # What `oprun server` and `oprun up` run at start: migrate, open, bootstrap an admin.
    services, made = open_services(Settings.load(database_url=url, bootstrap_token=SECRET))
    try:
        assert made is not None
        for path in (db, tmp_path / "oprun.db-wal", tmp_path / "oprun.db-shm"):
            assert _mode(path) == 0o600, path
        backup_database(url, tmp_path / "backup.db")  # what `oprun db backup` runs
    finally:
        services.close()
    assert _mode(tmp_path / "backup.db") == 0o600
    fresh = tmp_path / "fresh" / "oprun.db"
    restore_database(tmp_path / "backup.db", f"sqlite:///{fresh}")  # `oprun db restore`
    assert _mode(fresh) == 0o600


def test_a_store_opened_without_migrating_makes_its_new_file_private_too(tmp_path: Path) -> None:
    db = tmp_path / "bare.db"
    store = open_store(sqlite_url(db), migrate=False)
    try:
        assert _mode(db) == 0o600
    finally:
        store.close()


def test_a_database_file_the_user_made_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "mine.db"
    db.touch()
    db.chmod(0o640)
    store = open_store(sqlite_url(db))
    try:
        store.create_project("p")
        assert _mode(db) == 0o640
    finally:
        store.close()
