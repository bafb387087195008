"""The real `oprun` command, run as a subprocess against a real server and real workers."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from oprun.testing import free_port
from tests.e2e.conftest import ROOT, Cli, Ran, clean_env
from tests.integration.conftest import Tenant


def one_error_line(ran: Ran, code: str) -> str:
    """Assert `ran` failed with exactly one `error: CODE: ...` line on stderr; return it."""
    assert ran.returncode != 0, ran
    assert "Traceback" not in ran.stderr, ran
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran
    assert lines[0].startswith(f"error: {code}: "), ran
    assert ran.stdout == "", ran
    return lines[0]


def invoked_id(ran: Ran) -> str:
    """The operation id `oprun -o json invoke ...` printed."""
    assert ran.returncode == 0, ran
    op_id = json.loads(ran.stdout)["id"]
    assert op_id.startswith("op_"), ran
    return str(op_id)


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server (its worker serves it alone)."""
    return tenant


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll `predicate` until true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


# -- invoke --wait and ops wait: exit codes ---------------------------------------------


@pytest.mark.usefixtures("worker")
def test_invoke_wait_prints_succeeded_and_exits_0(cli: Cli) -> None:
    ran = cli("invoke", "progress", "-p", "steps=3", "--wait")
    assert ran.returncode == 0, ran
    first = ran.stdout.splitlines()[0]
    assert first.startswith("op_"), ran
    assert " progress SUCCEEDED" in first, ran
    assert '"steps": 3' in ran.stdout, ran
    assert ran.stderr == "", ran


@pytest.mark.usefixtures("worker")
def test_invoke_wait_of_failing_action_exits_1_with_one_error_line(cli: Cli) -> None:
    ran = cli("invoke", "fail", "-p", "message=kaboom", "--wait")
    assert ran.returncode == 1, ran
    assert " fail FAILED" in ran.stdout, ran
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran
    assert lines[0].startswith("error: FAILED: operation op_"), ran
    assert "kaboom" in lines[0], ran
    assert "Traceback" not in ran.stderr, ran


@pytest.mark.usefixtures("worker")
def test_invoke_wait_past_timeout_exits_4_and_leaves_it_running(
    cli: Cli, api: httpx.Client, tmp_path: Path
) -> None:
    ran = cli(
        "invoke",
        "once",
        "-p",
        f"marker_dir={tmp_path / 'markers'}",
        "-p",
        "seconds=30",
        "--wait",
        "--timeout",
        "1",
    )
    assert ran.returncode == 4, ran
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran
    assert lines[0].startswith("error: TIMEOUT: operation op_"), ran
    op_id = lines[0].split()[3]
    op = api.get(f"/v1/operations/{op_id}").json()
    assert op["status"] in ("QUEUED", "SCHEDULED", "RUNNING"), op
    api.post(f"/v1/operations/{op_id}:cancel").raise_for_status()


@pytest.mark.usefixtures("worker")
def test_ops_wait_on_canceled_operation_exits_3(
    cli: Cli, api: httpx.Client, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    op_id = invoked_id(
        cli("-o", "json", "invoke", "once", "-p", f"marker_dir={markers}", "-p", "seconds=30")
    )
    # Cancel it while it runs on the worker, not while it is still queued.
    wait_for(lambda: markers.is_dir() and any(markers.iterdir()), what="the action running")

    canceled = cli("ops", "cancel", op_id)
    assert canceled.returncode == 0, canceled
    assert canceled.stdout.startswith(f"{op_id} once "), canceled

    ran = cli("ops", "wait", op_id, "--timeout", "30")
    assert ran.returncode == 3, ran
    assert f"{op_id} once CANCELED" in ran.stdout, ran
    lines = ran.stderr.splitlines()
    assert lines == [f"error: CANCELED: operation {op_id} (once) was canceled"], ran


# -- ops list / get / logs --------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_ops_list_and_get_as_json_show_the_operation(cli: Cli) -> None:
    op_id = invoked_id(cli("-o", "json", "invoke", "progress", "-p", "steps=3", "--wait"))

    listed = cli("ops", "list", "-o", "json")
    assert listed.returncode == 0, listed
    items = json.loads(listed.stdout)
    assert [op["id"] for op in items] == [op_id], listed
    assert items[0]["status"] == "SUCCEEDED", listed

    got = cli("ops", "get", op_id, "-o", "json")
    assert got.returncode == 0, got
    op = json.loads(got.stdout)
    assert op["id"] == op_id, got
    assert op["status"] == "SUCCEEDED", got
    assert op["result"] == {"steps": 3}, got
    assert op["parameters"]["steps"] == 3, got


@pytest.mark.usefixtures("worker")
def test_ops_list_and_get_tables_show_whole_ids_when_piped(cli: Cli) -> None:
    op_id = invoked_id(cli("-o", "json", "invoke", "progress", "-p", "steps=1", "--wait"))

    listed = cli("ops", "list")
    assert listed.returncode == 0, listed
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "ACTION", "STATUS"], listed
    assert row.split()[:3] == [op_id, "progress@1", "SUCCEEDED"], listed

    got = cli("ops", "get", op_id)
    assert got.returncode == 0, got
    assert op_id in got.stdout and "SUCCEEDED" in got.stdout, got
    assert "status history" in got.stdout, got


@pytest.mark.usefixtures("worker")
def test_ops_logs_prints_the_action_log_lines(cli: Cli) -> None:
    op_id = invoked_id(cli("-o", "json", "invoke", "progress", "-p", "steps=3", "--wait"))
    ran = cli("ops", "logs", op_id)
    assert ran.returncode == 0, ran
    lines = ran.stdout.splitlines()
    for expected in ("did step 1", "did step 2", "did step 3", "printed to stdout"):
        assert any(expected in line for line in lines), ran
    assert [line for line in lines if "did step" in line] == [
        "did step 1",
        "did step 2",
        "did step 3",
    ], ran


# -- session-actions list / get ----------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_session_actions_list_and_get_by_operation_task_and_session(cli: Cli) -> None:
    ops = [
        invoked_id(cli("-o", "json", "invoke", "progress", "-p", f"steps={n}", "--wait"))
        for n in (1, 2)
    ]
    listed = cli("session-actions", "list", "--operation", ops[0], "-o", "json")
    assert listed.returncode == 0, listed
    items = json.loads(listed.stdout)
    runs = [sa for sa in items if "taskRun" in sa["definition"]]
    assert len(runs) == 1, listed
    (run,) = runs
    assert {sa["operation_id"] for sa in items} == {ops[0]}, listed
    assert run["status"] == "SUCCEEDED" and run["process_exit_code"] in (0, None), listed
    assert run["definition"]["taskRun"]["parameters"]["steps"] == {"int": "1"}, listed

    by_task = cli("session-actions", "list", "--task", run["task_id"], "-o", "json")
    assert [sa["id"] for sa in json.loads(by_task.stdout)] == [run["id"]], by_task
    by_session = cli("session-actions", "list", "--session", run["session_id"], "-o", "json")
    assert run["id"] in [sa["id"] for sa in json.loads(by_session.stdout)], by_session
    narrowed = cli(
        "session-actions", "list", "--operation", ops[1], "--task", run["task_id"], "-o", "json"
    )
    assert json.loads(narrowed.stdout) == [], narrowed

    table = cli("session-actions", "list", "--operation", ops[0])
    assert table.returncode == 0, table
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "SESSION", "ID", "KIND", "STATUS", "WORKER", "STARTED", "DURATION", "EXIT", "PROGRESS"
    ], table  # fmt: skip
    (row,) = [r for r in rows if run["id"] in r]
    assert "taskRun main steps=1" in row and "SUCCEEDED" in row, table
    assert run["session_id"] in table.stdout and run["worker_id"] in row, table

    got = cli("session-actions", "get", run["id"])
    assert got.returncode == 0, got
    for expected in (run["id"], "taskRun", "SUCCEEDED", ops[0], run["task_id"], "status history"):
        assert expected in got.stdout, got
    as_json = cli("session-actions", "get", run["id"], "-o", "json")
    detail = json.loads(as_json.stdout)
    assert detail["id"] == run["id"] and [h["status"] for h in detail["history"]][-1] == (
        "SUCCEEDED"
    ), as_json


def test_session_actions_list_needs_a_filter_and_get_an_existing_id(cli: Cli) -> None:
    ran = cli("session-actions", "list")
    line = one_error_line(ran, "USAGE")
    assert ran.returncode == 2, ran
    assert "--operation" in line and "--session" in line and "--task" in line, ran
    missing = cli("session-actions", "get", "sa_doesnotexist")
    assert "sa_doesnotexist" in one_error_line(missing, "NOT_FOUND"), missing
    assert missing.returncode == 1, missing


# -- errors: one line on stderr, no traceback, nonzero exit -----------------------------


def test_unknown_operation_is_one_not_found_line_and_exit_1(cli: Cli) -> None:
    ran = cli("ops", "get", "op_doesnotexist")
    line = one_error_line(ran, "NOT_FOUND")
    assert ran.returncode == 1, ran
    assert "op_doesnotexist" in line, ran


@pytest.mark.usefixtures("worker")
def test_bad_parameter_value_is_one_validation_line_and_exit_2(cli: Cli) -> None:
    ran = cli("invoke", "progress", "-p", "steps=abc")
    line = one_error_line(ran, "VALIDATION")
    assert ran.returncode == 2, ran
    assert "steps" in line and "abc" in line, ran


def test_wrong_token_is_one_unauthenticated_line_and_nonzero_exit(cli: Cli) -> None:
    ran = cli("ops", "list", token="oprun_wrong_secret")
    one_error_line(ran, "UNAUTHENTICATED")
    assert ran.returncode == 1, ran
    assert "oprun_wrong_secret" not in ran.stderr, ran


# -- oprun up ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below `root`, read from /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] != "Z":
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found: set[tuple[int, str]] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Those of `processes` (pid, start time) that still run (zombies count as ended)."""
    still = set()
    for pid, started in processes:
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            still.add((pid, started))
    return still


@dataclass
class Up:
    """An `oprun up` subprocess whose standard output is read line by line."""

    process: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def line_starting(self, prefix: str, timeout: float = 60) -> str:
        """The first line of its output starting with `prefix` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line starting with {prefix!r} within {timeout} s: {self.seen}")
            if line is None:
                pytest.fail(
                    f"oprun up exited ({self.process.poll()}) before {prefix!r}: {self.seen}"
                )
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def token(self) -> str:
        """The admin token from its `admin token: SECRET  (kept in ...)` line."""
        return self.line_starting("admin token: ").split()[2]


@contextmanager
def oprun_up(data_dir: Path, log: Path, **env: str) -> Iterator[Up]:
    """Run `python -m oprun up` on a free port; kill it at the end if it still runs."""
    port = free_port()
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "oprun", "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=clean_env(**env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    up = Up(process, port)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            up.lines.put(line.rstrip("\n"))
        up.lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield up
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def invoke_echo(url: str, token: str, value: object) -> dict[str, Any]:
    """Invoke the example `echo` action over HTTP and wait for it to end."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        created = http.post(
            "/v1/operations", json={"action": "echo", "parameters": {"value": value}}
        )
        assert created.status_code == 201, created.text
        op_id = created.json()["id"]
        deadline = time.monotonic() + 40
        while True:
            op = http.get(f"/v1/operations/{op_id}:wait", params={"timeout": 20}).json()
            if op["status"] in ("SUCCEEDED", "FAILED", "CANCELED") or time.monotonic() > deadline:
                return dict(op)


def test_up_runs_example_actions_and_exits_0_on_sigterm_leaving_no_children(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with oprun_up(data, tmp_path / "up.log") as up:
        assert up.line_starting("oprun is up at ") == (
            f"oprun is up at {up.url}  (API {up.url}/v1, docs {up.url}/docs)"
        )
        token = up.token()
        assert token.startswith("oprun_"), up.seen
        assert (data / "admin-token").read_text().strip() == token
        assert (data / "admin-token").stat().st_mode & 0o777 == 0o600
        assert up.line_starting("  export ") == f"  export OPRUN_URL={up.url} OPRUN_TOKEN={token}"

        op = invoke_echo(up.url, token, 42)
        assert op["status"] == "SUCCEEDED", op
        assert op["result"] == 42, op

        stat = _stat(up.process.pid)
        assert stat is not None and (up.process.pid, stat[2]) in descendants(os.getpid())
        before = descendants(up.process.pid)
        up.process.send_signal(signal.SIGTERM)
        try:
            code = up.process.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"oprun up still runs 20 s after SIGTERM; log: {(tmp_path / 'up.log').read_text()}"
            )
        assert code == 0, (tmp_path / "up.log").read_text()
        wait_for(lambda: not alive(before), timeout=5, what=f"the children of up {before} ending")


def test_up_accepts_the_bootstrap_token_from_the_environment(tmp_path: Path) -> None:
    with oprun_up(
        tmp_path / "data", tmp_path / "up.log", OPRUN_BOOTSTRAP_TOKEN="oprun_fixed_secret"
    ) as up:
        assert up.token() == "oprun_fixed_secret"
        with httpx.Client(base_url=up.url, timeout=30) as http:
            headers = {"Authorization": "Bearer oprun_fixed_secret"}
            assert http.get("/v1/projects/current", headers=headers).status_code == 200
            wrong = http.get("/v1/projects/current", headers={"Authorization": "Bearer oprun_no"})
            assert wrong.status_code == 401
        op = invoke_echo(up.url, "oprun_fixed_secret", {"a": [1, 2]})
        assert op["status"] == "SUCCEEDED", op
        assert op["result"] == {"a": [1, 2]}, op
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(20) == 0, (tmp_path / "up.log").read_text()
