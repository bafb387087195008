"""Upgrades lose nothing, and a server never runs on a schema newer than its code.

For each earlier migration head, a database is built at that revision and filled
with the rows oprun writes (a project, a token, a queue, an action, a worker,
operations in every status with their tasks, sessions, attempts, history, logs and
events), written with only the columns that revision has and in the form the code
of its time wrote them (`OLD_FORMS`). It is upgraded to the newest schema and read
back through the current store, which must find everything and go on working.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect, pool, select, text

from oprun.domain.errors import NotFound
from oprun.domain.models import ActionDefinition, InvocationSource, Requirements, RetryPolicy
from oprun.domain.params import ParameterSpec
from oprun.domain.protocol import Report
from oprun.domain.retention import Boundary
from oprun.domain.roles import Role
from oprun.domain.status import OperationStatus
from oprun.service.auth import hash_secret
from oprun.service.operations import params_digest
from oprun.store import NewOperation, open_store
from oprun.store import schema as t
from oprun.store.migrate import MIGRATIONS, head_revision, sqlalchemy_url, upgrade
from oprun.testing import Server, Worker, free_port

SECRET = "oprun_upgrade_test_secret"
DATA_TABLES = [
    tb
    for tb in t.metadata.sorted_tables
    if tb.name not in {"reaper_rounds"}  # the server's own state, seeded by its migration
]
"""Tables holding what users and workers wrote."""

BEFORE_0003_DEFINITION = {
    "name",
    "kind",
    "entrypoint",
    "parameters",
    "timeout",
    "queue",
    "max_attempts",
    "cacheable",
    "description",
}
"""The keys an action definition had before 0003 brought templates, retries and requirements."""


def _before_0003(table: str, row: dict[str, Any]) -> dict[str, Any]:
    if table == "action_versions":
        definition = {k: v for k, v in row["definition"].items() if k in BEFORE_0003_DEFINITION}
        return {**row, "definition": definition}
    return row


OLD_FORMS: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {"0003": _before_0003}
"""How rows were written before a revision, when its code wrote a value differently:
applied to the data of every earlier revision. A migration that changes how a value is
stored adds its old form here."""


def _earlier_heads() -> list[str]:
    script = ScriptDirectory(str(MIGRATIONS))
    ordered = [s.revision for s in reversed(list(script.walk_revisions()))]
    return ordered[:-1]


# -- the data, as the current code writes it ----------------------------------------------
def _report(a, kind, **kw):
    return Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=kind, **kw)


def _written_rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of a database the current code filled with one of everything."""
    url = f"sqlite:///{folder / 'source.db'}"
    store = open_store(url)
    try:
        project = store.create_project("upgrades")
        store.create_token(project.id, "admin", Role.ADMIN, hash_secret(SECRET))
        store.configure_queue(project.id, "fast", 5, 2)
        action, _ = store.save_action(
            project.id,
            ActionDefinition(
                name="resize",
                entrypoint="media:resize",
                parameters=[ParameterSpec(name="width", type="int")],
                retry=RetryPolicy(retry_on=["EXCEPTION"]),
                requirements=Requirements(tags=["cuda"]),
                max_attempts=2,
            ),
        )
        worker = store.register_worker(project.id, "w", "host", ["default"], {"tags": ["cuda"]})
        items = [
            NewOperation(
                project_id=project.id,
                action=action,
                queue="default",
                parameters={"width": w},
                params_digest=params_digest({"width": w}),
                created_by="upgrade-test",
                source_type=InvocationSource.MANUAL,
                source_id="test",
                idempotency_key=f"key-{w}",
                timeout=600,
            )
            for w in range(5)
        ]
        store.create_operations(items)
        done, failed, running = store.claim(worker.id, project.id, ["default"], 3, 30)
        store.apply_reports(
            worker.id,
            [
                _report(done, "running"),
                _report(done, "progress", percent=50, message="half", step_code="PROCESSING"),
                _report(done, "log", lines=["first line", "second line"]),
                _report(done, "succeeded", result={"width": 0}),
                _report(failed, "running"),
                _report(failed, "failed", error_code="CRASHED", error_message="boom", exit_code=3),
                _report(running, "running"),
                _report(running, "log", lines=["still going"], stream="stderr"),
            ],
        )
        waiting = store.list_operations(project.id, status=OperationStatus.QUEUED)
        assert len(waiting) == 2
        store.cancel_operation(project.id, waiting[0].id, "canceled by the test")
    finally:
        store.close()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        rows = {
            tb.name: [dict(r._mapping) for r in conn.execute(select(tb)).all()]
            for tb in DATA_TABLES
        }
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The rows, made once for every revision and backend."""
    return _written_rows(tmp_path_factory.mktemp("source"))


def _fill_at(url: str, revision: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Write `rows` into a database at `revision`: only its columns, in its time's form."""
    forms = [form for rev, form in OLD_FORMS.items() if revision < rev]
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.begin() as conn:
        # Parents before children by the keys of that revision (0012 dropped some).
        order = [name for name, _ in inspect(conn).get_sorted_table_and_fkc_names() if name]
        tables = {tb.name: tb for tb in DATA_TABLES}
        for tb in [tables[name] for name in order if name in tables]:
            if not rows[tb.name]:
                continue
            columns = {c["name"] for c in inspect(conn).get_columns(tb.name)}
            columns.discard("seq")  # the database numbers history, events and logs itself
            batch = []
            for row in rows[tb.name]:
                for form in forms:
                    row = form(tb.name, row)
                batch.append({k: v for k, v in row.items() if k in columns})
            conn.execute(insert(tb), batch)
    engine.dispose()


@pytest.mark.parametrize("revision", _earlier_heads())
def test_upgrading_from_an_earlier_head_keeps_every_row(revision, database_url, written):
    upgrade(database_url, revision)
    _fill_at(database_url, revision, written)

    upgrade(database_url)

    store = open_store(database_url, migrate=False)
    try:
        (project,) = written["projects"]
        pid = project["id"]
        assert store.get_project(pid).name == "upgrades"
        token = store.token_by_hash(hash_secret(SECRET))
        assert token is not None and token.role is Role.ADMIN
        assert store.get_action(pid, "resize").definition.entrypoint == "media:resize"
        assert {q.name for q in store.queue_stats(pid)} == {"default", "fast"}
        assert [w.name for w in store.list_workers(pid, None, 10)] == ["w"]
        history = {}
        for h in sorted(written["status_history"], key=lambda h: h["seq"]):
            history.setdefault(h["entity_id"], []).append(h["status"])
        logs = {}
        for line in sorted(written["logs"], key=lambda r: r["seq"]):
            logs.setdefault(line["operation_id"], []).append(line["line"])
        for row in written["operations"]:
            op = store.get_operation(pid, row["id"])
            assert op.status.value == row["status"]
            assert [h.status for h in op.history] == history[row["id"]]
            assert op.result == row["result"]
            error = op.error.model_dump(mode="json", exclude_none=True) if op.error else None
            assert error == row["error"]
            assert op.idempotency_key == row["idempotency_key"]
            tasks = store.list_tasks(pid, row["id"])
            assert [task.status.value for task in tasks] == [
                task["status"] for task in written["tasks"] if task["operation_id"] == row["id"]
            ]
            attempts = store.list_session_actions(pid, row["id"])
            assert sorted(a.id for a in attempts) == sorted(
                a["id"] for a in written["session_actions"] if a["operation_id"] == row["id"]
            )
            for a in attempts:
                assert [h.status for h in store.get_session_action(pid, a.id).history] == (
                    history[a.id]
                )
            kept = [r.line for r in store.list_logs(pid, row["id"], 0, 100)]
            assert kept == logs.get(row["id"], [])
        events = store.list_events(pid, 0, 1000)
        assert [(e.type, e.entity_id) for e in events] == [
            (e["type"], e["entity_id"]) for e in sorted(written["events"], key=lambda e: e["seq"])
        ]
        # ... and it goes on working: the waiting operation runs, retention can purge.
        (waiting,) = [r["id"] for r in written["operations"] if r["status"] == "QUEUED"]
        worker = store.register_worker(pid, "new", "host", ["default"], {"tags": ["cuda"]})
        (a,) = store.claim(worker.id, pid, ["default"], 1, 30)
        assert a.operation_id == waiting
        store.apply_reports(worker.id, [_report(a, "running"), _report(a, "succeeded")])
        assert store.get_operation(pid, waiting).status is OperationStatus.SUCCEEDED
        assert store.purge_operations(pid, Boundary(1e18, ""), 100) == 4
        with pytest.raises(NotFound):
            store.get_operation(pid, waiting)
    finally:
        store.close()


# -- rolling upgrades ----------------------------------------------------------------------
def _serve(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPRUN_")}
    return subprocess.run(
        [sys.executable, "-m", "oprun", *extra, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_server_refuses_a_schema_newer_than_its_code_in_one_line(database_url):
    upgrade(database_url)
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9001'"))
    engine.dispose()

    for command in (["server", "--port", str(free_port())], ["db", "upgrade"]):
        refused = _serve(database_url, *command)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "9001" in lines[0] and head_revision() in lines[0], lines[0]
        assert "newer than this oprun" in lines[0]


PREVIOUS = "d309567"
"""The last commit before 0004: the code at schema head 0003, as an older release."""


@pytest.fixture
def previous_release(tmp_path) -> Path:
    """The source of the previous release, unpacked from git (skipped without git history)."""
    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs git and the repository's history to unpack the previous release")
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", PREVIOUS, "src"],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path / "previous", filter="data")
    return tmp_path / "previous" / "src"


def _revision(url: str) -> str:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def test_an_older_server_keeps_serving_after_a_newer_one_upgrades_the_schema(
    previous_release, database_url, tmp_path
):
    old = Server(
        database_url=database_url,
        log_path=tmp_path / "old.log",
        environment={"PYTHONPATH": str(previous_release)},
    ).start()
    try:
        assert _revision(database_url) == "0003"  # the previous release's code is running
        new = Server(
            database_url=database_url, token=old.token, log_path=tmp_path / "new.log"
        ).start()
        try:
            assert _revision(database_url) == head_revision()
            headers = {"Authorization": f"Bearer {old.token}"}
            worker = Worker(new, log_path=tmp_path / "worker.log").start()
            try:
                # Work invoked through either server runs, and the other reads it finished.
                for writer, reader in ((old, new), (new, old)):
                    op = httpx.post(
                        f"{writer.url}/v1/operations",
                        json={"action": "echo", "parameters": {"value": writer.port}},
                        headers=headers,
                    )
                    assert op.status_code == 201, op.text
                    done = httpx.get(
                        f"{reader.url}/v1/operations/{op.json()['id']}:wait",
                        params={"timeout": 30},
                        headers=headers,
                        timeout=40,
                    ).json()
                    assert done["status"] == "SUCCEEDED", done
                    assert done["result"] == writer.port
            finally:
                worker.stop()
        finally:
            new.stop()
    finally:
        old.stop()
    assert "Traceback" not in (tmp_path / "old.log").read_text()
