"""`WorkerAgent` against an in-memory fake of the worker API (real child processes).

The real server is exercised by the integration and e2e suites; here the fake
lets each protocol rule be provoked on purpose: cancels, lost leases, refused
reports, server errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from oprun.domain.models import ActionDefinition
from oprun.examples import app as examples
from oprun.worker import WorkerAgent

from .test_child_process import alive, wait_dead

pytestmark = pytest.mark.timeout(30)

TOKEN = "oprun_secret_for_tests"


class FakeApi:
    """Just enough of /v1/workers to drive one agent."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.cancel: set[str] = set()
        self.lost: set[str] = set()
        self.refuse: set[str] = set()
        self.fail_next = 0
        self.seen_auth: set[str] = set()
        self.claims: list[int] = []
        """The `max` of each claim, in order."""
        self._n = 0

    def assign(self, entrypoint: str, timeout: float | None = None, **parameters: Any) -> str:
        self._n += 1
        sa = f"sa_{self._n}"
        action = ActionDefinition(name="a", entrypoint=entrypoint)
        self.pending.append(
            {
                "session_action_id": sa,
                "lease_epoch": 1,
                "lease_seconds": 30.0,
                "operation_id": f"op_{self._n}",
                "task_id": f"task_{self._n}",
                "action": action.model_dump(mode="json"),
                "parameters": parameters,
                "attempt": 1,
                "timeout": timeout,
            }
        )
        return sa

    def of(self, sa: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r["session_action_id"] == sa]

    def kinds(self, sa: str) -> list[str]:
        return [r["kind"] for r in self.of(sa)]

    def outcome(self, sa: str) -> dict[str, Any] | None:
        ends = [r for r in self.of(sa) if r["kind"] not in ("running", "progress", "log")]
        return ends[-1] if ends else None

    def lines(self, sa: str, stream: str | None = None) -> list[str]:
        return [
            line
            for r in self.of(sa)
            if r["kind"] == "log" and (stream is None or r.get("stream", "stdout") == stream)
            for line in r["lines"]
        ]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen_auth.add(request.headers.get("Authorization", ""))
        if self.fail_next > 0:
            self.fail_next -= 1
            return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "x"}})
        body = json.loads(request.content)
        path = request.url.path
        if path == "/v1/workers":
            self.registrations.append(body)
            return httpx.Response(201, json=self._worker(body))
        if path.endswith(":claim"):
            self.claims.append(body["max"])
            deadline = time.monotonic() + min(body["wait"], 0.1)
            while not self.pending and time.monotonic() < deadline:  # noqa: ASYNC110 - a fake
                await asyncio.sleep(0.01)
            taken, self.pending = self.pending[: body["max"]], self.pending[body["max"] :]
            return httpx.Response(200, json={"assignments": taken, "stop": False})
        if path.endswith(":heartbeat"):
            self.heartbeats.append({"wait": request.url.params.get("wait"), **body})
            held = [h["session_action_id"] for h in body["held"]]
            wait = float(request.url.params.get("wait", "0"))
            deadline = time.monotonic() + min(wait, 0.05)
            while time.monotonic() < deadline and not set(held) & (self.cancel | self.lost):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return httpx.Response(
                200,
                json={
                    "cancel": [s for s in held if s in self.cancel],
                    "lost": [s for s in held if s in self.lost],
                    "lease_seconds": 30.0,
                    "stop": False,
                },
            )
        if path.endswith(":report"):
            outcomes = []
            for report in body["reports"]:
                sa = report["session_action_id"]
                accepted = sa not in self.refuse and sa not in self.lost
                if accepted:
                    self.reports.append(report)
                outcomes.append({"session_action_id": sa, "accepted": accepted, "reason": None})
            return httpx.Response(200, json={"outcomes": outcomes})
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": path}})

    @staticmethod
    def _worker(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "wk_test",
            "project_id": "prj_test",
            "name": body["name"],
            "hostname": body["hostname"],
            "status": "IDLE",
            "queues": body["queues"],
            "capabilities": body["capabilities"],
            "created_at": datetime.now(UTC).isoformat(),
        }


def make_agent(api: FakeApi, **kwargs: Any) -> WorkerAgent:
    settings: dict[str, Any] = {"concurrency": 2, "grace": 1.0, "heartbeat_interval": 0.1}
    settings.update(kwargs)
    return WorkerAgent(
        "http://oprun.test",
        TOKEN,
        examples,
        name="unit",
        claim_wait=1.0,
        transport=httpx.MockTransport(api.handle),
        **settings,
    )


async def until(agent_task: asyncio.Task[None], check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if agent_task.done():
            agent_task.result()
            raise AssertionError("the agent stopped early")
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def scenario(api: FakeApi, body, **kwargs: Any) -> WorkerAgent:
    """Run the agent, then `await body(agent, task)`, then stop it and wait."""
    agent = make_agent(api, **kwargs)

    async def main() -> None:
        task = asyncio.create_task(agent.run())
        try:
            await body(agent, task)
        finally:
            agent.request_stop()
            await asyncio.wait_for(task, 15)

    asyncio.run(main())
    return agent


def pid_from_log(api: FakeApi, sa: str) -> int | None:
    for line in api.lines(sa):
        if line.startswith("waiting "):
            return int(line.split()[1])
    return None


def test_agent_registers_its_actions_and_reports_results(caplog):
    caplog.set_level(logging.DEBUG)
    api = FakeApi()
    sa = api.assign("oprun.examples:echo", value={"x": 1})
    sb = api.assign("tests.unit.actions_for_tests:chatty", steps=2)

    async def body(agent, task):
        await until(task, lambda: api.outcome(sa) and api.outcome(sb))

    scenario(api, body)
    registration = api.registrations[0]
    assert [a["name"] for a in registration["actions"]] == ["sleep", "echo", "fail", "noop"]
    assert registration["queues"] == ["default"] and registration["name"] == "unit"
    assert "python" in registration["capabilities"]["kinds"]
    assert api.outcome(sa) == {
        "session_action_id": sa,
        "lease_epoch": 1,
        "kind": "succeeded",
        "result": {"x": 1},
    }
    assert api.outcome(sb)["result"] == 2
    assert api.lines(sb) == [
        "step 1",
        "step 2",
        "printed by print()",
        "written to stderr",
        "from a grandchild",
        "no newline at the end",
    ]
    progress = [r for r in api.of(sb) if r["kind"] == "progress"]
    assert progress[-1]["percent"] == 100.0
    assert any(r.get("step_code") == "PROCESSING" for r in progress)
    assert api.seen_auth == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text
    assert api.heartbeats[-1]["status"] == "STOPPED"


def test_failures_carry_the_traceback_in_the_log():
    api = FakeApi()
    sa = api.assign("oprun.examples:fail", message="nope")

    async def body(agent, task):
        await until(task, lambda: api.outcome(sa))

    scenario(api, body)
    outcome = api.outcome(sa)
    assert outcome["kind"] == "failed"
    assert outcome["error_code"] == "EXCEPTION"
    assert outcome["error_message"] == "ValueError: nope"
    assert "ValueError: nope" in api.lines(sa, "stderr")


def test_cancel_from_heartbeat_stops_the_work_and_reports_canceled():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        api.cancel.add(sa)
        await until(task, lambda: api.outcome(sa))

    scenario(api, body)
    assert api.outcome(sa)["kind"] == "canceled"
    assert any("cancel requested" in line for line in api.lines(sa, "system"))
    assert wait_dead(pid_from_log(api, sa), 3)


def test_lost_work_is_killed_and_never_reported_again():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        count = len(api.of(sa))
        api.lost.add(sa)
        await until(task, lambda: not alive(pid_from_log(api, sa)), timeout=5)
        await asyncio.sleep(0.3)
        assert len(api.of(sa)) == count

    scenario(api, body)
    assert api.outcome(sa) is None


def test_refused_report_means_the_work_is_lost():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        api.refuse.add(sa)
        agent._reports.log(sa, 1, ["provoke a refusal"], "system")
        await until(task, lambda: not alive(pid_from_log(api, sa)), timeout=5)

    scenario(api, body)
    assert api.outcome(sa) is None


def test_timeout_fails_the_attempt_with_TIMEOUT():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:stubborn", timeout=0.5)

    async def body(agent, task):
        await until(task, lambda: api.outcome(sa))

    scenario(api, body, grace=0.5)
    outcome = api.outcome(sa)
    assert outcome["kind"] == "failed"
    assert outcome["error_code"] == "TIMEOUT"
    assert outcome["error_message"] == "timed out after 0.5 s"


def test_crashed_child_is_reported_with_its_exit_code_and_replaced():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:crash", code=3)
    sb = api.assign("oprun.examples:echo", value="after")

    async def body(agent, task):
        await until(task, lambda: api.outcome(sa) and api.outcome(sb))

    scenario(api, body, concurrency=1)
    crash = api.outcome(sa)
    assert (crash["kind"], crash["error_code"], crash["exit_code"]) == ("failed", "CRASHED", 3)
    assert "about to crash" in api.lines(sa)
    assert api.outcome(sb)["result"] == "after"


def test_drain_gives_unfinished_work_back_as_released():
    api = FakeApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        started = time.monotonic()
        agent.request_stop()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 5

    scenario(api, body, grace=0.3)
    assert api.outcome(sa)["kind"] == "released"
    statuses = [h["status"] for h in api.heartbeats]
    assert "STOPPING" in statuses and statuses[-1] == "STOPPED"
    assert wait_dead(pid_from_log(api, sa), 3)


def test_server_errors_are_retried():
    api = FakeApi()
    api.fail_next = 2
    sa = api.assign("oprun.examples:echo", value=1)

    async def body(agent, task):
        await until(task, lambda: api.outcome(sa))

    scenario(api, body)
    assert api.outcome(sa)["result"] == 1


def test_children_do_not_get_the_token():
    os.environ["OPRUN_TOKEN"] = TOKEN
    try:
        api = FakeApi()
        sa = api.assign("tests.unit.actions_for_tests:whoami")

        async def body(agent, task):
            await until(task, lambda: api.outcome(sa))

        scenario(api, body)
    finally:
        del os.environ["OPRUN_TOKEN"]
    assert api.outcome(sa)["result"]["token"] is None


def test_a_freed_slot_claims_once_no_work_runs_without_waiting_out_the_gather(monkeypatch):
    """The re-claim gathers slots freed by work still running, but never waits once none runs."""
    from oprun.worker import agent as agent_module

    class FakeSlots:
        def __init__(self) -> None:
            self.running = 1
            self.slot_freed = asyncio.Event()

    async def scenario() -> float:
        monkeypatch.setattr(agent_module, "CLAIM_GATHER", 30.0)
        agent = WorkerAgent("http://unused", TOKEN, concurrency=2)
        slots = FakeSlots()

        async def last_task_ends() -> None:
            await asyncio.sleep(0.05)
            slots.running = 0
            slots.slot_freed.set()

        ender = asyncio.create_task(last_task_ends())
        started = time.monotonic()
        await asyncio.wait_for(agent._gather(slots), 5)  # type: ignore[arg-type]
        await ender
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_a_freed_slot_that_gathered_while_the_capacity_shrank_claims_nothing_until_one_frees():
    """Tasks that grew long end the prefetch while a freed slot gathers others: the
    capacity shrinks under it, no place is free, and the claim waits for one. It asked
    for `max=0` instead, which the request refuses: the worker died of it."""

    class ShrinkingSlots:
        def __init__(self) -> None:
            self.slot_freed = asyncio.Event()
            self.running = 3
            self.capacity = 4  # 2 slots, and 2 more held while tasks were short

        @property
        def free(self) -> int:
            return max(0, self.capacity - self.running)

    agent = WorkerAgent("http://unused", TOKEN, concurrency=2)
    slots = ShrinkingSlots()
    asked: list[int] = []

    class Client:
        async def claim(self, worker_id: str, request: Any) -> Any:
            asked.append(request.max)
            agent._stop.set()
            return type("Answer", (), {"assignments": [], "stop": False})()

    async def scenario() -> None:
        agent._slots, agent._client, agent._heartbeats = slots, Client(), object()  # type: ignore[assignment]
        agent.worker_id = "wk_test"
        claims = asyncio.create_task(agent._claim_loop())
        await asyncio.sleep(0)  # the loop gathers: a slot is free, work still runs
        slots.running, slots.capacity = 2, 2  # a task ended, and tasks run long now
        slots.slot_freed.set()
        await asyncio.sleep(0.1)
        assert asked == [] and not claims.done()
        slots.running = 1  # another task ended: one place is free
        slots.slot_freed.set()
        await asyncio.wait_for(claims, 5)

    asyncio.run(scenario())
    assert asked == [1]


async def _warm(api: FakeApi, task: asyncio.Task[None]) -> None:
    """Run one task first: a worker prefetches once it has seen its tasks are short."""
    sa = api.assign("oprun.examples:echo", value="warm")
    await until(task, lambda: api.outcome(sa))


def _ran(api: FakeApi, sa: str) -> bool:
    return pid_from_log(api, sa) is not None


def _held(api: FakeApi) -> set[str]:
    """The session actions the last heartbeat held."""
    return {h["session_action_id"] for h in api.heartbeats[-1]["held"]} if api.heartbeats else set()


def test_prefetched_work_waits_for_a_slot_and_a_cancel_ends_it_without_running(monkeypatch):
    from oprun.worker import slots

    monkeypatch.setattr(slots, "PREFETCH_BELOW", 60.0)  # short enough, on a loaded machine
    api = FakeApi()

    async def body(agent, task):
        await _warm(api, task)
        first = api.assign("tests.unit.actions_for_tests:patient")
        second = api.assign("tests.unit.actions_for_tests:patient")
        await until(task, lambda: _ran(api, first))
        await until(task, lambda: second in _held(api))  # its lease is renewed meanwhile
        await asyncio.sleep(0.3)
        assert not _ran(api, second)  # one slot: the second waits for it
        api.cancel.add(second)
        await until(task, lambda: api.outcome(second))
        assert not _ran(api, second)
        api.cancel.add(first)
        await until(task, lambda: api.outcome(first))
        assert api.outcome(second)["kind"] == "canceled"
        assert api.outcome(first)["kind"] == "canceled"

    scenario(api, body, concurrency=1, prefetch=1)


def test_prefetched_work_that_waits_too_long_goes_back_to_the_queue(monkeypatch):
    from oprun.worker import slots

    monkeypatch.setattr(slots, "PREFETCH_PATIENCE", 0.3)
    monkeypatch.setattr(slots, "PREFETCH_BELOW", 60.0)
    api = FakeApi()
    sas: list[str] = []

    async def body(agent, task):
        await _warm(api, task)
        sas.extend(
            [
                api.assign("tests.unit.actions_for_tests:patient"),
                api.assign("oprun.examples:echo", value="later"),
            ]
        )
        await until(task, lambda: api.outcome(sas[1]))
        assert api.outcome(sas[0]) is None  # the first still runs

    scenario(api, body, concurrency=1, prefetch=1, grace=0.3)
    second = sas[1]
    assert api.kinds(second) == ["log", "released"]  # it never ran here; it says why
    assert api.lines(second, "stdout") == []
    assert api.lines(second, "system") == [
        "oprun: giving the task back before it started (it waited for a free slot)"
    ]


def test_drain_gives_back_prefetched_work_at_once_without_running_it(monkeypatch):
    from oprun.worker import slots

    monkeypatch.setattr(slots, "PREFETCH_BELOW", 60.0)
    api = FakeApi()
    sas: list[str] = []

    async def body(agent, task):
        await _warm(api, task)
        first = api.assign("tests.unit.actions_for_tests:patient")
        second = api.assign("oprun.examples:echo", value="never")
        sas.extend([first, second])
        await until(task, lambda: _ran(api, first))
        agent.request_stop()
        await until(task, lambda: api.outcome(second), timeout=5)
        assert api.outcome(first) is None  # still in its grace period
        await asyncio.wait_for(task, 10)

    scenario(api, body, concurrency=1, prefetch=1, grace=2.0)
    first, second = sas
    assert api.kinds(second) == ["log", "released"]
    assert api.lines(second, "stdout") == []
    assert api.outcome(first)["kind"] == "released"


def test_a_slot_holds_in_line_only_the_tasks_that_start_within_a_quarter_of_its_patience():
    """Tasks of 0.2 s: one in line per slot, as before; tasks of 0.01 s: the whole prefetch.

    With three in line behind tasks of 0.24 s, the last waited 0.72 s of its 1 s: a
    loaded machine sent such tasks back to the queue unrun (NEVER_ATTEMPTED).
    """
    from oprun.worker.reports import ReportBatcher
    from oprun.worker.slots import PREFETCH_BELOW, Slots

    async def send(body: str):
        raise AssertionError("nothing is reported here")

    async def held_after(run_time: float) -> int:
        reports = ReportBatcher(send, lambda report, outcome: None)
        slots = Slots(4, reports, {}, prefetch=12, patience=1.0)
        for _ in range(50):  # the moving average settles on the run time
            slots._learn(run_time)
        return slots.capacity

    assert asyncio.run(held_after(0.01)) == 4 + 12
    assert asyncio.run(held_after(0.08)) == 4 + 12  # three in line start within 0.24 s
    assert asyncio.run(held_after(0.12)) == 4 + 8
    assert asyncio.run(held_after(0.24)) == 4 + 4  # one in line, never none
    assert asyncio.run(held_after(PREFETCH_BELOW)) == 4  # long: no prefetch


def test_a_worker_prefetches_only_while_its_tasks_are_short(monkeypatch):
    from oprun.worker import slots

    monkeypatch.setattr(slots, "PREFETCH_BELOW", 0.2)
    monkeypatch.setattr(slots, "_SMOOTHING", 1.0)  # the last run time decides
    api = FakeApi()

    async def ends(task, sa: str) -> int:
        await until(task, lambda: api.outcome(sa))
        claims = len(api.claims)
        await until(task, lambda: len(api.claims) > claims)  # the next claim after it
        return api.claims[-1]

    async def body(agent, task):
        await ends(task, api.assign("oprun.examples:echo", value=1))  # starts the child
        assert await ends(task, api.assign("oprun.examples:echo", value=2)) == 5  # short
        assert await ends(task, api.assign("oprun.examples:sleep", seconds=0.4, steps=1)) == 2

    scenario(api, body, concurrency=2, prefetch=3)
    assert api.claims[0] == 2  # a fresh worker has not seen its tasks: slots only
