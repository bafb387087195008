"""A real child process, driven through `ChildProcess`, with no server."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oprun.worker._subprocess import child_environment
from oprun.worker.python.process import (
    ChildEvent,
    ChildItem,
    ChildProcess,
    Exited,
    OutputLine,
    TaskSpec,
)

ACTIONS = "tests.unit.actions_for_tests"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


def spec(entrypoint: str, seq: int = 1, tmp: Path | None = None, **parameters) -> TaskSpec:
    base = tmp or Path("/tmp/oprun-unit")
    return TaskSpec(
        seq=seq,
        entrypoint=entrypoint,
        parameters=parameters,
        operation_id="op_test",
        task_id="task_test",
        session_action_id="sa_test",
        attempt=2,
        input_dir=str(base / f"{seq}" / "input"),
        output_dir=str(base / f"{seq}" / "output"),
    )


async def run_task(child: ChildProcess, task: TaskSpec) -> list[ChildItem]:
    await child.run(task)
    return [item async for item in child.items()]


def outcome(items: list[ChildItem]) -> ChildItem:
    assert items, "no items"
    return items[-1]


def events(items: list[ChildItem], kind: str) -> list[dict]:
    return [i.data for i in items if isinstance(i, ChildEvent) and i.kind == kind]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie left for an init that does not reap counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def with_child(test):
    """Run `test(child)` in an event loop with a started child, closed afterwards."""

    async def main():
        child = ChildProcess()
        await child.start()
        try:
            return await test(child)
        finally:
            await child.close()

    return asyncio.run(main())


def test_echo_returns_its_input_after_running():
    items = with_child(lambda c: run_task(c, spec("oprun.examples:echo", value={"a": [1, 2]})))
    assert isinstance(items[0], ChildEvent) and items[0].kind == "running"
    last = outcome(items)
    assert isinstance(last, ChildEvent) and last.kind == "succeeded"
    assert last.data["result"] == {"a": [1, 2]}


def test_progress_step_and_log_events_arrive_in_order():
    items = with_child(lambda c: run_task(c, spec(f"{ACTIONS}:chatty", steps=3)))
    kinds = [i.kind for i in items if isinstance(i, ChildEvent)]
    assert kinds[:2] == ["running", "step"]
    assert [e["percent"] for e in events(items, "progress")] == pytest.approx(
        [100 / 3, 200 / 3, 100]
    )
    assert [e["message"] for e in events(items, "progress")] == ["1/3", "2/3", "3/3"]
    assert [e["line"] for e in events(items, "log")] == ["step 1", "step 2", "step 3"]
    assert events(items, "step") == [{"event": "step", "code": "PROCESSING"}]
    assert outcome(items).data["result"] == 3


def test_print_stderr_and_grandchild_output_become_lines_before_the_outcome():
    items = with_child(lambda c: run_task(c, spec(f"{ACTIONS}:chatty", steps=1)))
    lines = [i.line for i in items if isinstance(i, OutputLine)]
    assert lines == [
        "printed by print()",
        "written to stderr",
        "from a grandchild",
        "no newline at the end",
    ]
    assert isinstance(items[-1], ChildEvent) and items[-1].kind == "succeeded"


def test_child_is_reused_and_sees_its_task_and_no_token(tmp_path):
    async def two_tasks(child):
        first = await run_task(child, spec(f"{ACTIONS}:whoami", seq=1, tmp=tmp_path))
        second = await run_task(child, spec(f"{ACTIONS}:whoami", seq=2, tmp=tmp_path))
        return first, second, child.pid

    env = child_environment({**os.environ, "OPRUN_TOKEN": "secret-token", "OPRUN_URL": "x"})

    async def main():
        child = ChildProcess(env=env)
        await child.start()
        try:
            return await two_tasks(child)
        finally:
            await child.close()

    first, second, pid = asyncio.run(main())
    a, b = outcome(first).data["result"], outcome(second).data["result"]
    assert a["pid"] == b["pid"] == a["pgid"] == pid  # one child, leader of its own group
    assert a["token"] is None
    assert a["attempt"] == 2 and a["operation_id"] == "op_test"
    assert a["input_dir"] == str(tmp_path / "1" / "input")
    assert a["output_dir_exists"] is True


def test_failure_carries_the_exception_and_its_traceback():
    items = with_child(lambda c: run_task(c, spec("oprun.examples:fail", message="bad input")))
    last = outcome(items)
    assert last.kind == "failed"
    assert last.data["error_code"] == "EXCEPTION"
    assert last.data["error_message"] == "ValueError: bad input"
    assert "raise ValueError(message)" in last.data["traceback"]
    assert "oprun/worker/python/child.py" not in last.data["traceback"]


def test_unimportable_entrypoint_fails_with_import_error_and_child_survives():
    async def both(child):
        bad = await run_task(child, spec("no_such_module_xyz:fn", seq=1))
        good = await run_task(child, spec("oprun.examples:echo", seq=2, value=5))
        return bad, good

    bad, good = with_child(both)
    assert outcome(bad).data["error_code"] == "IMPORT_ERROR"
    assert "no_such_module_xyz" in outcome(bad).data["error_message"]
    assert outcome(good).data["result"] == 5


def test_result_that_is_not_json_fails_with_a_clear_message():
    items = with_child(lambda c: run_task(c, spec(f"{ACTIONS}:unserialisable")))
    last = outcome(items)
    assert last.data["error_code"] == "RESULT_NOT_JSON"
    assert "returned a set" in last.data["error_message"]


def test_async_actions_and_path_parameters_are_supported():
    async def both(child):
        a = await run_task(child, spec(f"{ACTIONS}:asynchronous", seq=1, value=21))
        task = spec(f"{ACTIONS}:with_path", seq=2, where="/tmp/x")
        task = TaskSpec(**{**task.__dict__, "path_parameters": ("where",)})
        b = await run_task(child, task)
        return a, b

    a, b = with_child(both)
    assert outcome(a).data["result"] == 42
    assert outcome(b).data["result"] == "PosixPath"


def test_crash_ends_with_exited_and_its_exit_code():
    async def crash(child):
        items = await run_task(child, spec(f"{ACTIONS}:crash", code=3))
        return items, child.alive

    items, still_alive = with_child(crash)
    assert [i.line for i in items if isinstance(i, OutputLine)] == ["about to crash"]
    assert outcome(items) == Exited(3)
    assert not still_alive


def test_cancel_stops_a_cooperative_action_promptly():
    async def cancel(child):
        await child.run(spec(f"{ACTIONS}:patient"))
        seen = []
        async for item in child.items():
            seen.append(item)
            if isinstance(item, ChildEvent) and item.kind == "log":
                started = time.monotonic()
                await child.cancel(grace=5.0)
                return seen, time.monotonic() - started, [i async for i in child.items()]
        raise AssertionError(f"no log line: {seen}")

    _, took, rest = with_child(cancel)
    assert took < 3.0  # SIGTERM raised Cancelled at once; no need to wait for SIGKILL
    assert isinstance(rest[-1], (ChildEvent, Exited))
    assert any(isinstance(i, ChildEvent) and i.kind == "canceled" for i in rest)


@pytest.mark.parametrize(
    "action",
    [
        # The interrupt turns into another error (pydantic-core reports one raised in
        # its regex match as a validation error; libraries wrap what interrupted them).
        "wraps_the_cancel",
        # The action sees ctx.cancelled before SIGTERM and returns normally.
        "returns_when_canceled",
    ],
)
def test_a_task_the_cancel_reached_ends_as_canceled_however_it_ends(action):
    async def cancel(child):
        await child.run(spec(f"{ACTIONS}:{action}"))
        async for item in child.items():
            if isinstance(item, ChildEvent) and item.kind == "log":
                await child.cancel(grace=5.0)
                return [i async for i in child.items()]
        raise AssertionError("no log line")

    rest = with_child(cancel)
    kinds = [i.kind for i in rest if isinstance(i, ChildEvent)]
    assert "canceled" in kinds and not {"failed", "succeeded"} & set(kinds), kinds


def test_cancel_kills_grandchild_that_ignores_sigterm():
    grace = 1.0

    async def cancel(child):
        await child.run(spec(f"{ACTIONS}:stubborn"))
        async for item in child.items():
            if isinstance(item, ChildEvent) and item.kind == "log":
                grandchild = int(item.data["line"].split()[-1])
                assert alive(grandchild)
                started = time.monotonic()
                await child.cancel(grace=grace)
                return grandchild, child.pid, time.monotonic() - started
        raise AssertionError("the action logged no pid")

    grandchild, pid, took = with_child(cancel)
    assert wait_dead(grandchild, grace + 2)
    assert wait_dead(pid, 1.0)
    assert took >= grace * 0.9  # the stubborn group had its grace before SIGKILL
    assert group_members(pid) == []


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from oprun.worker.python.process import ChildEvent, ChildProcess, TaskSpec

    async def main():
        child = ChildProcess()
        await child.start()
        await child.run(TaskSpec(seq=1, entrypoint="tests.unit.actions_for_tests:stubborn",
                                 input_dir="/tmp/i", output_dir="/tmp/o"))
        async for item in child.items():
            if isinstance(item, ChildEvent) and item.kind == "log":
                print(child.pid, item.data["line"].split()[-1], flush=True)
                break
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def test_child_group_dies_with_its_worker():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT], stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    try:
        ready, _, _ = select.select([worker.stdout], [], [], 15)
        assert ready, "the throwaway worker printed no pids"
        child_pid, grandchild_pid = map(int, worker.stdout.readline().split())
        assert alive(child_pid) and alive(grandchild_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        assert wait_dead(child_pid, 5)
        assert wait_dead(grandchild_pid, 5)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()
