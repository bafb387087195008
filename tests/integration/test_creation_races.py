"""Creation races end in one row and a success for everyone, on each backend.

Two workers registering the same new action, invocations on a queue that does not
exist yet, two admins configuring a new queue: each round sends its requests at the
same instant (a barrier) and every one of them must succeed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import Tenant

ROUNDS = 8
AT_ONCE = 6


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server."""
    return tenant


def _at_once(api: httpx.Client, send: Callable[[httpx.Client], httpx.Response]) -> list[int]:
    """Send AT_ONCE requests as nearly together as threads allow; their statuses."""
    barrier = threading.Barrier(AT_ONCE)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=30) as client:
            client.get("/v1/healthz")  # connect before the barrier: the requests race, not dials
            barrier.wait()
            status = send(client).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_workers_registering_the_same_new_action_at_once_all_succeed_with_one_row(api):
    for _ in range(ROUNDS):
        definition = {
            "name": _name("resize"),
            "entrypoint": "tests.integration.actions:echo",
            "queue": _name("q"),
        }
        registration = {"name": "w", "hostname": "h", "actions": [definition]}
        statuses = _at_once(api, lambda c, r=registration: c.post("/v1/workers", json=r))
        assert statuses == [201] * AT_ONCE
        versions = api.get(f"/v1/actions/{definition['name']}/versions").json()["items"]
        assert [v["version"] for v in versions] == [1]


def test_saving_the_same_new_action_at_once_creates_it_once_and_answers_everyone(api):
    for _ in range(ROUNDS):
        definition = {"name": _name("resize"), "entrypoint": "tests.integration.actions:echo"}
        statuses = _at_once(api, lambda c, d=definition: c.post("/v1/actions", json=d))
        assert sorted(statuses) == [200] * (AT_ONCE - 1) + [201]
        versions = api.get(f"/v1/actions/{definition['name']}/versions").json()["items"]
        assert len(versions) == 1


def test_invoking_on_a_new_queue_at_once_creates_the_queue_once(api):
    action = {"name": _name("echo"), "entrypoint": "tests.integration.actions:echo"}
    assert api.post("/v1/actions", json=action).status_code == 201
    for _ in range(ROUNDS):
        queue = _name("q")
        invocation = {"action": action["name"], "queue": queue}
        statuses = _at_once(api, lambda c, i=invocation: c.post("/v1/operations", json=i))
        assert statuses == [201] * AT_ONCE
        found = [q for q in api.get("/v1/queues").json()["items"] if q["name"] == queue]
        assert len(found) == 1 and found[0]["depth"] == AT_ONCE


def test_configuring_a_new_queue_at_once_creates_it_once(api):
    for _ in range(ROUNDS):
        queue = _name("q")
        statuses = _at_once(api, lambda c, q=queue: c.put(f"/v1/queues/{q}", json={"priority": 5}))
        assert statuses == [200] * AT_ONCE
        found = [q for q in api.get("/v1/queues").json()["items"] if q["name"] == queue]
        assert len(found) == 1 and found[0]["priority"] == 5
