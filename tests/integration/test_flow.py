"""Every step of the tour, end to end: SDK -> real server -> real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

import oprun
from oprun import OperationStatus
from oprun.domain.models import ActionDefinition
from tests.integration import actions
from tests.integration.conftest import Tenant


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is dead too: it only waits for its parent to reap it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # reaped meanwhile, between the two looks or during the read
        return True
    return state == "Z"


def _eventually(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server (its workers serve it alone)."""
    return tenant


@pytest.fixture
def client(server):
    with oprun.Client(server.url, server.token) as c:
        yield c


def test_a_python_action_runs_and_is_followed_to_its_result(client, start_worker):
    start_worker()
    op = client.operations.invoke("progress", {"steps": "3"}, idempotency_key="tour-1")
    assert op.status is OperationStatus.QUEUED and not op.done
    done = op.wait(timeout=60)
    assert done is not op and op.status is OperationStatus.QUEUED  # snapshots are immutable
    assert done.succeeded() and done.result == {"steps": 3}
    assert done.step_code == "PROCESSING"
    assert done.progress.percent == 100 and done.progress.counts.succeeded == 1
    assert [h.status for h in done.history] == ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
    assert done.created_by == "bootstrap" or done.created_by
    assert done.provenance.action.name == "progress" and done.provenance.action.digest
    assert done.refresh().status is OperationStatus.SUCCEEDED
    lines = [r.line for r in done.logs()]
    assert "did step 1" in lines and "printed to stdout" in lines
    (attempt,) = done.session_actions()
    assert attempt.status.value == "SUCCEEDED" and attempt.worker_id == done.worker_id
    assert attempt.definition["taskRun"]["parameters"]["steps"] == {"int": "3"}
    assert client.session_actions.get(attempt.id).progress_percent == 100
    listed = list(client.operations.list(status=OperationStatus.SUCCEEDED, action="progress"))
    assert [o.id for o in listed] == [done.id]
    again = client.operations.invoke("progress", {"steps": "3"}, idempotency_key="tour-1")
    assert again.id == op.id  # idempotent resubmission: one operation


def test_wait_raises_timeout_error_and_a_failure_carries_its_error(client, start_worker, tmp_path):
    start_worker()
    slow = client.operations.invoke("once", {"marker_dir": str(tmp_path / "m"), "seconds": 30})
    with pytest.raises(TimeoutError):
        slow.wait(timeout=0.5)
    assert slow.cancel().status in (OperationStatus.CANCELING, OperationStatus.CANCELED)
    failed = client.operations.invoke("fail", {"message": "no such clip"}).wait(timeout=30)
    assert failed.status is OperationStatus.FAILED and not failed.succeeded()
    assert failed.error is not None and "no such clip" in failed.error.message
    with pytest.raises(oprun.OperationFailed) as caught:
        failed.wait_until_done()
    assert caught.value.operation.id == failed.id
    assert slow.wait(timeout=30).status is OperationStatus.CANCELED


def test_cancel_of_queued_work_means_it_never_runs(client, start_worker, tmp_path):
    marker = tmp_path / "m"
    client.actions.register(actions.app)  # no worker yet: register the actions ourselves
    op = client.operations.invoke("once", {"marker_dir": str(marker)})
    assert op.cancel().status is OperationStatus.CANCELED
    start_worker()
    after = client.operations.invoke("echo", {"value": 1}).wait(timeout=30)
    assert after.succeeded()  # the worker is serving, and still never ran the canceled one
    assert not marker.exists()
    assert op.poll().status is OperationStatus.CANCELED


def _descendants(root: int) -> set[int]:
    """Every process below `root` now."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.add(pid)
            todo.append(pid)
    return found


def test_cancel_of_running_work_leaves_no_process_behind(client, start_worker, tmp_path, figure):
    """Issue 3, proof 4: a grandchild that ignores SIGTERM is gone by grace + 2 s."""
    grace = 1.0
    start_worker(grace=grace)
    pid_dir = tmp_path / "pids"
    op = client.operations.invoke("stubborn", {"pid_dir": str(pid_dir)})
    _eventually(lambda: (pid_dir / "pids").exists(), 30, "the action started")
    child, grandchild = (int(p) for p in (pid_dir / "pids").read_text().split())
    deadline = time.monotonic() + 1.0  # the shell's `sleep` (unless the shell exec'd it)
    while not _descendants(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    processes = {child, grandchild} | _descendants(child)
    asked = time.monotonic()
    op.cancel()
    _eventually(lambda: all(map(_gone, processes)), grace + 2.0, "nothing of it running")
    gone = time.monotonic() - asked
    assert gone <= grace + 2.0
    done = op.wait(timeout=30)
    assert done.status is OperationStatus.CANCELED
    figure(
        f"cancel of a task whose grandchild ignores SIGTERM: its {len(processes)} processes "
        f"gone {gone:.2f} s after the request (bound grace {grace:g} + 2 s)"
    )


def test_a_worker_killed_with_sigkill_has_its_work_requeued_and_finished_once(
    client, start_worker, tmp_path, figure
):
    marker = tmp_path / "m"
    first = start_worker()
    op = client.operations.invoke("once", {"marker_dir": str(marker), "seconds": 2.0})
    _eventually(lambda: marker.exists() and any(marker.iterdir()), 30, "the first attempt started")
    (run,) = marker.iterdir()
    child = int(run.read_text())
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    _eventually(lambda: _gone(child), 5, "the killed worker's child died with it")
    killed_at = time.monotonic()
    start_worker()
    done = op.wait(timeout=60)
    figure(f"requeue: finished {time.monotonic() - killed_at:.2f} s after the SIGKILL")
    assert done.succeeded() and done.result == 2  # two runs began, the second finished
    statuses = sorted(sa.status.value for sa in done.session_actions())
    assert statuses == ["INTERRUPTED", "SUCCEEDED"]
    assert done.attempts == 2


def test_retry_and_delete(client, start_worker):
    start_worker()
    done = client.operations.invoke("echo", {"value": "x"}).wait(timeout=30)
    again = done.retry()
    assert again.id != done.id and again.provenance.source.source_type.value == "Retry"
    assert again.wait(timeout=30).result == "x"
    done.delete()
    with pytest.raises(oprun.NotFound):
        done.poll()


def test_a_cacheable_action_answers_no_content_when_up_to_date(client, server, start_worker):
    start_worker()
    client.actions.register(
        ActionDefinition(
            name="cached-echo",
            entrypoint="tests.integration.actions:echo",
            parameters=[{"name": "value", "type": "json", "required": False}],
            cacheable=True,
        )
    )
    first = client.operations.invoke("cached-echo", {"value": 7})
    assert first.wait(timeout=30).succeeded()
    second = client.operations.invoke("cached-echo", {"value": 7})
    assert isinstance(second, oprun.NoOp) and second.succeeded() and second.done
    third = client.operations.invoke("cached-echo", {"value": 8})
    assert isinstance(third, oprun.Operation)
    # A minimal bulk answer holds null where the cache answered, an id where it did not.
    bulk = httpx.post(
        f"{server.url}/v1/operations:bulk",
        json={
            "invocations": [{"action": "cached-echo", "parameters": {"value": v}} for v in (7, 9)]
        },
        headers={"Authorization": f"Bearer {server.token}", "Prefer": "return=minimal"},
    )
    assert bulk.status_code == 200, bulk.text
    cached, new = bulk.json()["ids"]
    assert cached is None and client.operations.get(new).parameters == {"value": 9}


def test_the_async_client_is_the_same_api(server, start_worker):
    start_worker()

    async def scenario():
        async with oprun.AsyncClient(server.url, server.token) as client:
            op = await client.operations.invoke("echo", {"value": [1, 2]})
            return await op.wait(timeout=30)

    done = asyncio.run(scenario())
    assert done.succeeded() and done.result == [1, 2]
