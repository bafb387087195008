"""`WorkerAgent` through outages, against the fake worker API of test_agent.py.

A server that is away must not cost a healthy worker its leases: its heartbeats come
back within one interval of the server, even when the network swallowed them without
an error (TCP would deliver them only after its own backoff). A worker the server gave
up for lost is told to stop: it kills its work and `run()` raises `WorkerGivenUp` (the
CLI exits non-zero).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from oprun.worker import WorkerGivenUp

from .test_agent import FakeApi, alive, make_agent, pid_from_log, until

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.1


class OutageApi(FakeApi):
    """The fake API, with an outage switch (every call answers 503) and a give-up switch."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.given_up = False
        self.beats_at: list[float] = []
        self.calls_while_down: list[str] = []
        self.swallowing = False
        self.swallowed: list[str] = []
        self.stall_until = 0.0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.swallowing:
            # A dropped packet: no answer and no error until TCP's backoff resends it, at
            # `stall_until`, after the network is back (unless the caller gave up first).
            self.swallowed.append(path.rsplit(":", 1)[-1])
            while self.swallowing or time.monotonic() < self.stall_until:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        if self.down:
            self.calls_while_down.append(path.rsplit(":", 1)[-1])
            return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "down"}})
        if self.given_up and path.endswith(":heartbeat"):
            held = [h["session_action_id"] for h in json.loads(request.content)["held"]]
            return httpx.Response(
                200, json={"cancel": [], "lost": held, "lease_seconds": 30.0, "stop": True}
            )
        response = await super().handle(request)
        if path.endswith(":heartbeat"):
            self.beats_at.append(time.monotonic())
        return response


def _run(api: FakeApi, body) -> BaseException | None:
    """Run an agent through `body(agent, task)`, stop it; what `run()` raised, if anything."""
    agent = make_agent(api, heartbeat_interval=INTERVAL)
    raised: list[BaseException] = []

    async def main() -> None:
        task = asyncio.create_task(agent.run())
        try:
            await body(agent, task)
        finally:
            agent.request_stop()
            try:
                await asyncio.wait_for(task, 15)
            except Exception as exc:
                raised.append(exc)

    asyncio.run(main())
    return raised[0] if raised else None


def test_heartbeats_resume_within_an_interval_of_the_servers_return():
    api = OutageApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")
    outage = 6.0  # long enough for the client's own backoff to reach seconds
    back_after: list[float] = []

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        api.down = True
        await asyncio.sleep(outage)
        api.down = False
        back = time.monotonic()
        await until(task, lambda: api.beats_at and api.beats_at[-1] > back, timeout=15)
        back_after.append(api.beats_at[-1] - back)
        assert alive(pid_from_log(api, sa))  # the work went on through the outage

    assert _run(api, body) is None
    beats_while_down = api.calls_while_down.count("heartbeat")
    assert beats_while_down >= outage / INTERVAL / 2  # paced by the interval, not backing off
    assert back_after[0] < 4 * INTERVAL + 0.3, f"first heartbeat {back_after[0]:.2f} s after"


def test_a_heartbeat_the_network_swallows_is_sent_again_without_waiting_for_tcp():
    api = OutageApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")
    back_after: list[float] = []

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        api.swallowing = True
        await asyncio.sleep(1.0)
        api.stall_until = time.monotonic() + 5.0  # what was sent meanwhile stalls on
        api.swallowing = False
        back = time.monotonic()
        await until(task, lambda: api.beats_at and api.beats_at[-1] > back, timeout=15)
        back_after.append(api.beats_at[-1] - back)
        assert alive(pid_from_log(api, sa))

    assert _run(api, body) is None
    assert api.swallowed.count("heartbeat") >= 3  # given up and sent again meanwhile
    assert back_after[0] < 3 * INTERVAL + 0.3, f"first heartbeat {back_after[0]:.2f} s after"


def test_a_worker_given_up_by_the_server_kills_its_work_and_raises_given_up():
    api = OutageApi()
    sa = api.assign("tests.unit.actions_for_tests:patient")

    async def body(agent, task):
        await until(task, lambda: pid_from_log(api, sa))
        api.given_up = True
        deadline = time.monotonic() + 10
        while not task.done() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a task
            await asyncio.sleep(0.02)
        assert task.done(), "the worker did not stop when told to"

    raised = _run(api, body)
    assert isinstance(raised, WorkerGivenUp), raised
    assert raised.code == "GIVEN_UP" and raised.details["worker_id"] == "wk_test"
    assert not alive(pid_from_log(api, sa))
    assert api.outcome(sa) is None  # lost work is never reported
