"""OpenJD actions end to end: a real server, real workers, real OpenJD sessions."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from oprun.domain.status import OperationStatus
from tests.integration.conftest import Tenant

CHUNKED = """
specificationVersion: 'jobtemplate-2023-09'
extensions: [TASK_CHUNKING]
name: chunked
parameterDefinitions:
- {name: Marker, type: PATH}
jobEnvironments:
- name: Scratch
  script:
    actions:
      onEnter:
        command: bash
        args: ['-c', 'echo enter >> "{{Param.Marker}}"; echo openjd_status: ready']
      onExit:
        command: bash
        args: ['-c', 'echo exit >> "{{Param.Marker}}"']
steps:
- name: Render
  parameterSpace:
    taskParameterDefinitions:
    - name: Frame
      type: CHUNK[INT]
      range: "1-100"
      chunks: {defaultTaskCount: 10, rangeConstraint: CONTIGUOUS}
  script:
    actions:
      onRun:
        command: bash
        args: ['-c', 'echo "frames {{Task.Param.Frame}}"; echo openjd_progress: 50; echo openjd_progress: 100']
"""


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server (its workers serve it alone)."""
    return tenant


def _register(api, name: str, **definition) -> dict:
    response = api.post("/v1/actions", json={"name": name, "kind": "openjd", **definition})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _invoke(api, action: str, **parameters) -> dict:
    response = api.post("/v1/operations", json={"action": action, "parameters": parameters})
    assert response.status_code == 201, response.text
    return response.json()


def _wait(api, op_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/v1/operations/{op_id}:wait", params={"timeout": 10})
        op = response.json()
        assert "status" in op, response.text
        if OperationStatus(op["status"]).is_terminal() or time.monotonic() > deadline:
            return op


def test_a_chunked_template_enters_its_environment_once_per_session(
    api, start_worker, tmp_path, figure
):
    marker = tmp_path / "marker.txt"
    _register(api, "chunked", template=CHUNKED)
    start_worker(concurrency=2)
    started = time.monotonic()
    op = _invoke(api, "chunked", Marker=str(marker))
    done = _wait(api, op["id"])
    took = time.monotonic() - started
    assert done["status"] == "SUCCEEDED", done
    counts = done["progress"]["counts"]
    assert counts["succeeded"] == 10 and sum(counts.values()) == 10
    # The operation is done when its tasks are; environments exit just after.
    deadline = time.monotonic() + 10
    while True:
        actions = api.get(
            f"/v1/operations/{op['id']}/session-actions", params={"limit": 500}
        ).json()["items"]
        kinds = Counter(next(iter(sa["definition"])) for sa in actions)
        settled = all(sa["status"] != "RUNNING" for sa in actions)
        if (settled and kinds["envExit"] == kinds["envEnter"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    sessions = {sa["session_id"] for sa in actions}
    frames = [
        sa["definition"]["taskRun"]["parameters"]["Frame"]
        for sa in actions
        if "taskRun" in sa["definition"]
    ]
    assert kinds["taskRun"] == 10 and len(frames) == 10
    assert kinds["envEnter"] == len(sessions) == kinds["envExit"] <= 2  # once per session
    enters = Path(marker).read_text().split().count("enter")
    assert enters == len(sessions)
    assert all(sa["status"] == "SUCCEEDED" for sa in actions), [
        (sa["status"], sa["definition"], sa["history"])
        for sa in actions
        if sa["status"] != "SUCCEEDED"
    ]
    logs = api.get(f"/v1/operations/{op['id']}/logs", params={"limit": 500}).json()["items"]
    assert any("frames 1-10" in line["line"] for line in logs), [r["line"] for r in logs]
    figure(
        f"100 frames in 10 chunked tasks: {len(sessions)} session(s), environment "
        f"entered {enters} time(s), {took:.1f} s end to end"
    )


def test_the_command_shorthand_and_openjd_fail_lines(api, start_worker):
    _register(api, "shout", command=["bash", "-c", "echo hello {{Param.Who}}"])
    _register(
        api,
        "broken",
        command=["bash", "-c", "echo 'openjd_fail: the disk is full'; exit 3"],
        max_attempts=1,
    )
    start_worker(concurrency=2)
    ok = _invoke(api, "shout", Who="world")
    bad = _invoke(api, "broken")
    assert _wait(api, ok["id"])["status"] == "SUCCEEDED"
    lines = [r["line"] for r in api.get(f"/v1/operations/{ok['id']}/logs").json()["items"]]
    assert "hello world" in lines
    failed = _wait(api, bad["id"])
    assert failed["status"] == "FAILED"
    assert failed["error"]["message"] == "the disk is full"
    assert failed["error"]["details"]["exit_code"] == 3


def test_an_invalid_template_is_refused_quoting_the_model(api):
    broken = yaml.safe_load(CHUNKED)
    broken["steps"][0]["script"]["actions"]["onRun"].pop("command")
    response = api.post("/v1/actions", json={"name": "bad", "kind": "openjd", "template": broken})
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "VALIDATION" and "command" in body["message"]


def test_job_parameters_are_validated_at_invocation(api):
    _register(api, "chunked", template=CHUNKED)
    response = api.post("/v1/operations", json={"action": "chunked", "parameters": {}})
    assert response.status_code == 400
    assert "Marker" in response.json()["error"]["message"]


SLOW = """
specificationVersion: 'jobtemplate-2023-09'
name: slow
parameterDefinitions:
- {name: PidFile, type: PATH}
jobEnvironments:
- name: Env
  script:
    actions:
      onEnter: {command: bash, args: ['-c', 'echo entered']}
      onExit: {command: bash, args: ['-c', 'echo exited']}
steps:
- name: Sleep
  script:
    actions:
      onRun:
        command: bash
        args: ['-c', 'trap "" TERM; (trap "" TERM; sleep 300) & echo "$$ $!" > "{{Param.PidFile}}"; wait']
        cancelation: {mode: NOTIFY_THEN_TERMINATE, notifyPeriodInSeconds: 1}
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # gone, or going between the open and the read (ESRCH)
        return False


def _pids(path: Path, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def test_cancel_stops_an_openjd_task_that_ignores_sigterm_and_exits_its_environment(
    api, start_worker, tmp_path, figure
):
    _register(api, "slow", template=SLOW)
    start_worker(concurrency=1, grace=1.0)
    pid_file = tmp_path / "pids"
    op = _invoke(api, "slow", PidFile=str(pid_file))
    pids = _pids(pid_file)
    asked = time.monotonic()
    assert api.post(f"/v1/operations/{op['id']}:cancel").status_code in (200, 202)
    done = _wait(api, op["id"])
    assert done["status"] == "CANCELED"
    while any(_alive(p) for p in pids):
        assert time.monotonic() - asked < 1.0 + 2.0, "a process outlived the cancel"
        time.sleep(0.05)
    gone = time.monotonic() - asked
    deadline = time.monotonic() + 10
    while True:
        actions = api.get(
            f"/v1/operations/{op['id']}/session-actions", params={"limit": 500}
        ).json()["items"]
        exits = [sa for sa in actions if "envExit" in sa["definition"]]
        if (exits and exits[0]["status"] == "SUCCEEDED") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert exits and exits[0]["status"] == "SUCCEEDED"
    task = next(sa for sa in actions if "taskRun" in sa["definition"])
    assert task["status"] == "CANCELED"
    figure(f"OpenJD cancel (notify period 1 s): no process left {gone:.2f} s after it")


def test_a_killed_worker_leaves_no_openjd_process_behind(api, start_worker, tmp_path, figure):
    _register(api, "slow", template=SLOW)
    worker = start_worker(concurrency=1)
    pid_file = tmp_path / "pids"
    _invoke(api, "slow", PidFile=str(pid_file))
    pids = _pids(pid_file)
    killed = time.monotonic()
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait()
    while any(_alive(p) for p in pids):
        assert time.monotonic() - killed < 5, "an OpenJD process outlived its worker"
        time.sleep(0.05)
    figure(f"worker SIGKILL: OpenJD processes gone {time.monotonic() - killed:.2f} s later")
