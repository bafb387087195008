"""Backups taken while a server runs and writes, restored, and served again, on each backend.

SQLite: `oprun db backup` (SQLite's online backup) and `oprun db restore`. PostgreSQL:
the documented practice, `pg_dump -Fc` then `pg_restore` into a new database.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from oprun.testing import Server, Worker
from tests.conftest import fresh_database


def _oprun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oprun", *args], capture_output=True, text=True, timeout=120
    )


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )


def _operations(server: Server) -> dict[str, dict]:
    """Every operation of the server's project, by id."""
    found: dict[str, dict] = {}
    cursor = None
    with _client(server) as api:
        while True:
            page = api.get("/v1/operations", params={"limit": 500, "cursor": cursor}).json()
            found.update((op["id"], op) for op in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found


@contextmanager
def _busy(server: Server, folder: Path) -> Iterator[threading.Event]:
    """A worker running operations that a thread keeps invoking, until the block ends."""
    stop = threading.Event()

    def invoke() -> None:
        with _client(server) as api:
            i = 0
            while not stop.is_set():
                api.post("/v1/operations", json={"action": "echo", "parameters": {"value": i}})
                i += 1
                time.sleep(0.01)

    worker = Worker(server, log_path=folder / "worker.log").start()
    writer = threading.Thread(target=invoke, daemon=True)
    writer.start()
    try:
        yield stop
    finally:
        stop.set()
        writer.join(30)
        worker.stop()


def _finished(server: Server, at_least: int) -> dict[str, dict]:
    deadline = time.monotonic() + 60
    while True:
        done = {k: v for k, v in _operations(server).items() if v["status"] == "SUCCEEDED"}
        if len(done) >= at_least:
            return done
        assert time.monotonic() < deadline, f"only {len(done)} operations finished"
        time.sleep(0.2)


def _check_restored(server: Server, before: dict[str, dict]) -> None:
    """Every operation that had finished before the backup is there, as it was."""
    restored = _operations(server)
    missing = sorted(set(before) - set(restored))
    assert not missing, f"{len(missing)} finished operations lost, e.g. {missing[:3]}"
    with _client(server) as api:
        for op_id, op in list(before.items())[:20]:
            again = api.get(f"/v1/operations/{op_id}").json()
            assert again["status"] == "SUCCEEDED" and again["result"] == op["result"]
            assert [h["status"] for h in again["history"]] == [
                "QUEUED",
                "SCHEDULED",
                "RUNNING",
                "SUCCEEDED",
            ]
            logs = api.get(f"/v1/operations/{op_id}/logs").status_code
            assert logs == 200


def test_sqlite_backup_while_the_server_writes_restores_every_finished_operation(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    url = f"sqlite:///{live / 'oprun.db'}"
    backup = tmp_path / "backups" / "oprun.db"
    backup.parent.mkdir()
    server = Server(database_url=url, log_path=tmp_path / "server.log").start()
    try:
        with _busy(server, tmp_path):
            before = _finished(server, at_least=30)
            made = _oprun("db", "backup", str(backup), "--database-url", url)
            assert made.returncode == 0, made.stderr
            time.sleep(0.5)  # the server goes on writing after the backup
        after = len(_operations(server))
        # A restore over the database the server holds is refused, naming why.
        refused = _oprun("db", "restore", str(backup), "--database-url", url, "--yes")
        assert refused.returncode == 1 and "in use" in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1  # one line
    finally:
        server.stop()

    fresh = tmp_path / "fresh" / "oprun.db"
    restored = _oprun("db", "restore", str(backup), "--database-url", f"sqlite:///{fresh}", "-y")
    assert restored.returncode == 0, restored.stderr
    again = Server(
        database_url=f"sqlite:///{fresh}", token=server.token, log_path=tmp_path / "again.log"
    ).start()
    try:
        _check_restored(again, before)
        assert len(before) <= len(_operations(again)) <= after
    finally:
        again.stop()


def test_postgres_pg_dump_while_the_server_writes_and_pg_restore_into_a_new_database(tmp_path):
    missing = [tool for tool in ("pg_dump", "pg_restore") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH (apt-get install postgresql-client)")
    dump = tmp_path / "oprun.dump"
    with fresh_database("postgres", tmp_path) as url:
        server = Server(database_url=url, log_path=tmp_path / "server.log").start()
        try:
            with _busy(server, tmp_path):
                before = _finished(server, at_least=30)
                made = subprocess.run(
                    ["pg_dump", "-Fc", "-f", str(dump), "--dbname", url],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if "server version mismatch" in made.stderr:
                    pytest.skip(f"pg_dump is older than the server: {made.stderr.strip()}")
                assert made.returncode == 0, made.stderr
                time.sleep(0.5)
            after = len(_operations(server))
        finally:
            server.stop()
    with fresh_database("postgres", tmp_path) as new_url:
        restored = subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", new_url, str(dump)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restored.returncode == 0, restored.stderr
        again = Server(
            database_url=new_url, token=server.token, log_path=tmp_path / "again.log"
        ).start()
        try:
            _check_restored(again, before)
            assert len(before) <= len(_operations(again)) <= after
        finally:
            again.stop()
