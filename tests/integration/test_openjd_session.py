"""OpenJD sessions run for real: a host process, openjd-sessions, shell actions, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from oprun.domain.errors import ValidationError
from oprun.worker.openjd.events import (
    ActionEvent,
    ActionOutcome,
    OutputEvent,
)
from oprun.worker.openjd.session import OpenJDSession

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]

ENVS_TEMPLATE = """
specificationVersion: jobtemplate-2023-09
name: Envs
parameterDefinitions:
- {name: Log, type: PATH}
jobEnvironments:
- name: JobEnv
  script:
    actions:
      onEnter: {command: bash, args: ["-c", "echo enter JobEnv >> {{Param.Log}}"]}
      onExit: {command: bash, args: ["-c", "echo exit JobEnv >> {{Param.Log}}"]}
steps:
- name: A
  stepEnvironments:
  - name: EnvA
    script:
      actions:
        onEnter: {command: bash, args: ["-c", "echo enter EnvA >> {{Param.Log}}"]}
        onExit: {command: bash, args: ["-c", "echo exit EnvA >> {{Param.Log}}"]}
  parameterSpace:
    taskParameterDefinitions:
    - {name: Frame, type: INT, range: "1-5"}
  script:
    actions:
      onRun: {command: bash, args: ["-c", "echo task A {{Task.Param.Frame}} >> {{Param.Log}}"]}
- name: B
  stepEnvironments:
  - name: EnvB
    script:
      actions:
        onEnter: {command: bash, args: ["-c", "echo enter EnvB >> {{Param.Log}}"]}
        onExit: {command: bash, args: ["-c", "echo exit EnvB >> {{Param.Log}}"]}
  script:
    actions:
      onRun: {command: bash, args: ["-c", "echo task B >> {{Param.Log}}"]}
"""


def one_step(script: str, *, cancelation: dict[str, Any] | None = None, **action: Any) -> dict:
    """A one-step template whose task runs `script` (an embedded bash file)."""
    on_run: dict[str, Any] = {"command": "bash", "args": ["{{Task.File.Script}}"], **action}
    if cancelation:
        on_run["cancelation"] = cancelation
    return {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "OneStep",
        "parameterDefinitions": [{"name": "Dir", "type": "PATH"}],
        "steps": [
            {
                "name": "S",
                "script": {
                    "actions": {"onRun": on_run},
                    "embeddedFiles": [
                        {"name": "Script", "type": "TEXT", "data": textwrap.dedent(script)}
                    ],
                },
            }
        ],
    }


class Recorder:
    """Collects what a session reports."""

    def __init__(self) -> None:
        self.actions: list[ActionEvent] = []
        self.outputs: list[OutputEvent] = []
        self._expected: dict[str, asyncio.Event] = {}

    def output(self, event: OutputEvent) -> None:
        self.outputs.append(event)
        for line in event.lines:
            if line in self._expected:
                self._expected[line].set()

    async def line(self, text: str) -> None:
        """Wait until the action prints `text`."""
        self._expected.setdefault(text, asyncio.Event())
        if text not in self.lines():
            await self._expected[text].wait()

    def lines(self, stream: str = "output") -> list[str]:
        return [line for o in self.outputs if o.stream == stream for line in o.lines]

    def ended(self) -> list[tuple[str, str | None, str]]:
        return [
            (a.kind, a.environment or a.step, a.outcome.status)
            for a in self.actions
            if a.phase == "ended" and a.outcome is not None
        ]


def session(
    tmp_path: Path, template: dict[str, Any], parameters: dict[str, Any]
) -> tuple[OpenJDSession, Recorder]:
    rec = Recorder()
    s = OpenJDSession(
        session_id="sess-test",
        template=template,
        job_parameters=parameters,
        workdir=tmp_path / "work",
        on_action=rec.actions.append,
        on_output=rec.output,
    )
    return s, rec


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], within: float) -> float:
    """Seconds until every pid is gone; fails after `within`."""
    start = time.monotonic()
    while any(alive(p) for p in pids):
        assert time.monotonic() - start < within, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.02)
    return time.monotonic() - start


def read_pids(path: Path, count: int, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"{path} never listed {count} pids")


def test_environments_are_entered_once_across_five_tasks_of_a_step(tmp_path, figure):
    log = tmp_path / "log.txt"
    s, rec = session(tmp_path, yaml.safe_load(ENVS_TEMPLATE), {"Log": str(log)})

    async def body() -> list[ActionOutcome]:
        await s.start()
        started = time.monotonic()
        outcomes = [
            await s.run_task("A", {"Frame": {"int": str(f)}}, timeout=30) for f in range(1, 6)
        ]
        per_task = (time.monotonic() - started) / 5
        figure(f"5 tasks, environments entered once: {per_task * 1000:.1f} ms per task")
        assert s.environments == ("JobEnv", "EnvA")
        await s.end()
        return outcomes

    outcomes = run(body)
    assert [o.status for o in outcomes] == ["SUCCEEDED"] * 5
    assert log.read_text().splitlines() == [
        "enter JobEnv",
        "enter EnvA",
        *(f"task A {f}" for f in range(1, 6)),
        "exit EnvA",
        "exit JobEnv",
    ]
    started = [(a.kind, a.environment) for a in rec.actions if a.phase == "started"]
    assert started.count(("envEnter", "JobEnv")) == 1
    assert started.count(("envEnter", "EnvA")) == 1
    assert started.count(("taskRun", None)) == 5
    assert s.environments == ()


def test_a_new_step_exits_the_previous_steps_environments_first(tmp_path):
    log = tmp_path / "log.txt"
    s, rec = session(tmp_path, yaml.safe_load(ENVS_TEMPLATE), {"Log": str(log)})

    async def body() -> None:
        await s.start()
        for step, frame in [("A", 1), ("A", 2), ("B", None), ("A", 3)]:
            params = {"Frame": {"int": str(frame)}} if frame else {}
            assert (await s.run_task(step, params, timeout=None)).succeeded
        await s.end()

    run(body)
    assert log.read_text().splitlines() == [
        "enter JobEnv",
        "enter EnvA",
        "task A 1",
        "task A 2",
        "exit EnvA",
        "enter EnvB",
        "task B",
        "exit EnvB",
        "enter EnvA",
        "task A 3",
        "exit EnvA",
        "exit JobEnv",
    ]
    assert ("envExit", "EnvA", "SUCCEEDED") in rec.ended()


def test_progress_status_and_fail_lines_become_events_and_the_outcome(tmp_path):
    template = one_step(
        """
        echo "working"
        echo "openjd_progress: 25"
        echo "openjd_status: Rendering frame 7"
        echo "to stderr" >&2
        echo "openjd_fail: the license server said no"
        exit 3
        """
    )
    s, rec = session(tmp_path, template, {"Dir": str(tmp_path)})

    async def body() -> ActionOutcome:
        await s.start()
        outcome = await s.run_task("S", {}, timeout=None)
        await s.end()
        return outcome

    outcome = run(body)
    assert outcome == ActionOutcome(
        "FAILED", exit_code=3, message="the license server said no", progress=25.0
    )
    assert [o.percent for o in rec.outputs if o.kind == "progress"] == [25.0]
    assert [o.message for o in rec.outputs if o.kind == "status"] == ["Rendering frame 7"]
    assert {"working", "to stderr", "openjd_progress: 25"} <= set(rec.lines("output"))
    assert any("exited with code: 3" in line for line in rec.lines("session"))


def test_a_task_after_a_failure_runs_in_a_fresh_session_with_environments_reentered(tmp_path):
    log = tmp_path / "log.txt"
    template = yaml.safe_load(ENVS_TEMPLATE)
    on_run = template["steps"][1]["script"]["actions"]["onRun"]
    on_run["args"] = ["-c", "echo task B >> {{Param.Log}}; exit 1"]
    s, _ = session(tmp_path, template, {"Log": str(log)})

    async def body() -> list[str]:
        await s.start()
        statuses = [(await s.run_task("B", {}, timeout=None)).status]
        statuses.append((await s.run_task("A", {"Frame": {"int": "1"}}, timeout=None)).status)
        await s.end()
        return statuses

    assert run(body) == ["FAILED", "SUCCEEDED"]
    assert log.read_text().splitlines() == [
        "enter JobEnv",
        "enter EnvB",
        "task B",
        "exit EnvB",
        "exit JobEnv",
        "enter JobEnv",
        "enter EnvA",
        "task A 1",
        "exit EnvA",
        "exit JobEnv",
    ]


def test_embedded_files_and_parameters_are_formatted_by_openjd(tmp_path):
    template = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "Embedded",
        "parameterDefinitions": [{"name": "Greeting", "type": "STRING", "default": "hi"}],
        "jobEnvironments": [
            {
                "name": "Env",
                "variables": {"FROM_VARIABLES": "declared"},
                "script": {
                    "actions": {"onEnter": {"command": "{{Env.File.Enter}}"}},
                    "embeddedFiles": [
                        {
                            "name": "Enter",
                            "type": "TEXT",
                            "runnable": True,
                            "data": "#!/bin/sh\necho 'openjd_env: FROM_ENTER=exported'\n",
                        }
                    ],
                },
            }
        ],
        "steps": [
            {
                "name": "S",
                "parameterSpace": {
                    "taskParameterDefinitions": [
                        {"name": "Frame", "type": "INT", "range": "1-3"},
                        {"name": "Label", "type": "STRING", "range": ["x"]},
                    ]
                },
                "script": {
                    "actions": {"onRun": {"command": "{{Task.File.Run}}"}},
                    "embeddedFiles": [
                        {
                            "name": "Run",
                            "type": "TEXT",
                            "runnable": True,
                            "data": "#!/bin/sh\n"
                            'echo "{{Param.Greeting}} frame={{Task.Param.Frame}} '
                            'label={{Task.Param.Label}} $FROM_VARIABLES $FROM_ENTER"\n'
                            'echo "cwd=$(pwd) wd={{Session.WorkingDirectory}}"\n',
                        }
                    ],
                },
            }
        ],
    }
    s, rec = session(tmp_path, template, {"Greeting": "hello"})

    async def body() -> ActionOutcome:
        await s.start()
        outcome = await s.run_task(
            "S", {"Frame": {"int": "2"}, "Label": {"string": "x"}}, timeout=5
        )
        await s.end()
        return outcome

    assert run(body).succeeded
    lines = rec.lines("output")
    assert "hello frame=2 label=x declared exported" in lines
    (where,) = [line for line in lines if line.startswith("cwd=")]
    cwd, wd = where.removeprefix("cwd=").split(" wd=")
    assert cwd == wd and Path(wd).parent == tmp_path / "work"
    assert not Path(wd).exists()  # end() cleaned the session's working directory up


def test_cancel_notifies_a_script_that_traps_sigterm_then_kills_it(tmp_path, figure):
    template = one_step(
        """
        trap 'echo "notified, cleaning up"' TERM
        echo started
        for i in $(seq 1 600); do sleep 0.05; done
        """,
        cancelation={"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": 1},
    )
    s, rec = session(tmp_path, template, {"Dir": str(tmp_path)})

    async def body() -> tuple[ActionOutcome, float]:
        await s.start()
        task = asyncio.create_task(s.run_task("S", {}, timeout=None))
        await rec.line("started")
        started = time.monotonic()
        await s.cancel()
        outcome = await task
        elapsed = time.monotonic() - started
        await s.end()
        return outcome, elapsed

    outcome, elapsed = run(body)
    figure(f"NOTIFY_THEN_TERMINATE (notify period 1 s): canceled after {elapsed:.2f} s")
    assert outcome.status == "CANCELED"
    assert "notified, cleaning up" in rec.lines()
    assert 0.9 <= elapsed < 3.0


def test_cancel_kills_grandchildren_that_ignore_sigterm_or_leave_the_group(tmp_path, figure):
    pids = tmp_path / "pids"
    template = one_step(
        f"""
        echo $$ >> {pids}
        bash -c 'trap "" TERM; sleep 300 & echo $! >> {pids}; wait' &
        setsid bash -c 'trap "" TERM; echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait' &
        (setsid sleep 300 & echo $! >> {pids})
        trap '' TERM
        while true; do sleep 0.05; done
        """,
        cancelation={"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": 30},
    )
    s, _ = session(tmp_path, template, {"Dir": str(tmp_path)})

    async def body() -> tuple[ActionOutcome, list[int], float]:
        await s.start()
        task = asyncio.create_task(s.run_task("S", {}, timeout=None))
        found = await asyncio.to_thread(read_pids, pids, 5)
        started = time.monotonic()
        await s.cancel(grace=0.5)  # shorter than the template's 30 s notify period
        outcome = await task
        elapsed = time.monotonic() - started
        await s.end()
        return outcome, found, elapsed

    outcome, found, elapsed = run(body)
    gone = wait_gone(found, within=1.0)
    figure(f"cancel with 0.5 s grace: outcome after {elapsed:.2f} s, {len(found)} pids gone")
    assert outcome.status == "CANCELED"
    assert elapsed < 3.0 and gone < 1.0


def test_a_task_past_its_timeout_ends_as_timeout(tmp_path, figure):
    template = one_step("echo started; sleep 30\n")
    template_own = one_step("sleep 30\n", timeout=1)
    s, _ = session(tmp_path, template, {"Dir": str(tmp_path)})
    own, _ = session(tmp_path / "own", template_own, {"Dir": str(tmp_path)})

    async def body() -> list[tuple[ActionOutcome, float]]:
        results = []
        for sess, timeout in [(s, 0.5), (own, None)]:
            await sess.start()
            started = time.monotonic()
            outcome = await sess.run_task("S", {}, timeout=timeout)
            results.append((outcome, time.monotonic() - started))
            await sess.end()
        return results

    (server, server_s), (template_limit, template_s) = run(body)
    figure(f"timeout 0.5 s from the server: TIMEOUT after {server_s:.2f} s")
    figure(f"timeout 1 s in the template: TIMEOUT after {template_s:.2f} s")
    assert server.status == "TIMEOUT"
    assert server.message == "the task ran longer than its timeout of 0.5s"
    assert 0.4 < server_s < 2.5
    assert template_limit.status == "TIMEOUT"
    assert 0.9 < template_s < 3.0


def test_an_environment_that_fails_to_enter_fails_the_task_without_running_it(tmp_path):
    log = tmp_path / "log.txt"
    template = yaml.safe_load(ENVS_TEMPLATE)
    enter = template["steps"][0]["stepEnvironments"][0]["script"]["actions"]["onEnter"]
    enter["args"] = ["-c", "echo 'openjd_fail: no GPU here'; exit 2"]
    s, rec = session(tmp_path, template, {"Log": str(log)})

    async def body() -> ActionOutcome:
        await s.start()
        outcome = await s.run_task("A", {"Frame": {"int": "1"}}, timeout=None)
        await s.end()
        return outcome

    outcome = run(body)
    assert outcome.status == "FAILED"
    assert outcome.message == "step 'A' environment 'EnvA' failed to enter: no GPU here"
    assert ("envEnter", "EnvA", "FAILED") in rec.ended()
    assert not any(a.kind == "taskRun" for a in rec.actions)
    # openjd-sessions exits an environment even when entering it failed
    assert log.read_text().splitlines() == ["enter JobEnv", "exit EnvA", "exit JobEnv"]


def test_cancel_while_an_environment_is_entering_skips_the_task(tmp_path):
    log = tmp_path / "log.txt"
    template = yaml.safe_load(ENVS_TEMPLATE)
    enter = template["jobEnvironments"][0]["script"]["actions"]["onEnter"]
    enter["args"] = ["-c", "echo entering; sleep 30"]
    s, rec = session(tmp_path, template, {"Log": str(log)})

    async def body() -> ActionOutcome:
        await s.start()
        task = asyncio.create_task(s.run_task("A", {"Frame": {"int": "1"}}, timeout=None))
        await rec.line("entering")
        await s.cancel()
        outcome = await task
        await s.end()
        return outcome

    outcome = run(body)
    assert outcome.status == "CANCELED"
    assert ("envEnter", "JobEnv", "CANCELED") in rec.ended()
    assert not any(a.kind == "taskRun" for a in rec.actions)
    assert log.read_text().splitlines() == ["exit JobEnv"]


def test_kill_stops_the_host_and_everything_at_once_without_exiting_environments(tmp_path, figure):
    pids = tmp_path / "pids"
    log = tmp_path / "log.txt"
    template = yaml.safe_load(ENVS_TEMPLATE)
    template["steps"][1]["script"]["actions"]["onRun"]["args"] = [
        "-c",
        f"echo $$ >> {pids}; setsid sleep 300 & echo $! >> {pids}; wait",
    ]
    s, _ = session(tmp_path, template, {"Log": str(log)})

    async def body() -> tuple[ActionOutcome, list[int], float]:
        await s.start()
        task = asyncio.create_task(s.run_task("B", {}, timeout=None))
        found = await asyncio.to_thread(read_pids, pids, 2)
        assert s.pid is not None
        found.append(s.pid)
        started = time.monotonic()
        await s.kill()
        outcome = await task
        return outcome, found, time.monotonic() - started

    outcome, found, elapsed = run(body)
    figure(f"kill(): host and {len(found) - 1} action pids gone in {elapsed * 1000:.0f} ms")
    assert outcome.status == "FAILED"
    assert outcome.message == "the session was killed"
    wait_gone(found, within=0.5)
    assert "exit" not in log.read_text()


WORKER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from oprun.worker.openjd.session import OpenJDSession

async def main():
    s = OpenJDSession(session_id="doomed", template=json.loads(sys.argv[1]),
                      job_parameters={}, workdir=Path(sys.argv[2]),
                      on_action=lambda e: None, on_output=lambda e: None)
    await s.start()
    print(s.pid, flush=True)
    await s.run_task("S", {}, timeout=None)

asyncio.run(main())
"""


def test_sigkill_of_the_worker_leaves_no_process_of_the_session(tmp_path, figure):
    import json

    pids = tmp_path / "pids"
    template = one_step(
        f"""
        echo $$ >> {pids}
        sleep 300 &
        echo $! >> {pids}
        setsid sleep 300 &
        echo $! >> {pids}
        wait
        """
    )
    del template["parameterDefinitions"]
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(template), str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert worker.stdout is not None
        host = int(worker.stdout.readline())
        found = read_pids(pids, 3)
        assert all(alive(p) for p in found)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        gone = wait_gone([*found, host], within=2.0)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    figure(f"SIGKILL of the worker: host and {len(found)} action pids gone in {gone * 1000:.0f} ms")


def test_invalid_job_parameters_fail_start_with_the_models_message(tmp_path):
    s, _ = session(tmp_path, yaml.safe_load(ENVS_TEMPLATE), {})

    async def body() -> None:
        await s.start()

    with pytest.raises(ValidationError) as caught:
        run(body)
    assert "Values missing for required job parameters: Log" in caught.value.message
    assert caught.value.details["parameter"] == "Log"
    assert s.pid is not None and not alive(s.pid)
