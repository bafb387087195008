"""Every list a client sends has a maximum; a queue name is held to one rule everywhere.

Each refusal is a 400 `VALIDATION` in the error shape that creates nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from oprun.domain.limits import (
    MAX_ACTION_PARAMETERS,
    MAX_ALLOWED_VALUES,
    MAX_BULK_INVOKE,
    MAX_CAPABILITIES,
    MAX_COMMAND_ARGS,
    MAX_HELD,
    MAX_NAME_LENGTH,
    MAX_TAGS,
    MAX_WORKER_ACTIONS,
    MAX_WORKER_QUEUES,
)
from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store

ADMIN = "oprun_input_bounds_unit_admin"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HOSTILE = "<img src=x onerror=alert(1)>"


class Api:
    """A blocking client of the app in this process (the admin's token on every call)."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=AUTH
        )

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, ADMIN)
    services = Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))
    client = Api(build_app(services, run_reaper=False))
    try:
        yield client
    finally:
        client.close()
        services.close()


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION"
    assert error["details"]["field"].startswith(field), error


def _action(**extra: Any) -> dict[str, Any]:
    return {"name": "a", "entrypoint": "m:f", **extra}


def _nothing_created(api: Api) -> None:
    assert api.get("/v1/workers").json()["items"] == []
    assert api.get("/v1/actions").json()["items"] == []
    assert api.get("/v1/operations").json()["items"] == []
    assert [q["name"] for q in api.get("/v1/queues").json()["items"]] in ([], ["default"])


def _register(api: Api, **extra: Any) -> Any:
    return api.post("/v1/workers", json={"name": "w", "hostname": "h", **extra})


@pytest.mark.parametrize(
    ("registration", "field"),
    [
        ({"queues": [f"q{i}" for i in range(MAX_WORKER_QUEUES + 1)]}, "queues"),
        ({"actions": [_action(name=f"a{i}") for i in range(MAX_WORKER_ACTIONS + 1)]}, "actions"),
        ({"capabilities": {f"c{i}": 1 for i in range(MAX_CAPABILITIES + 1)}}, "capabilities"),
        ({"capabilities": {"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}}, "capabilities"),
        ({"queues": [HOSTILE]}, "queues.0"),
    ],
    ids=["queues", "actions", "capabilities", "tags", "queue-name"],
)
def test_a_worker_registration_is_bounded(api, registration, field):
    _refused(_register(api, **registration), field)
    _nothing_created(api)


def test_a_worker_registration_at_the_limits_is_accepted(api):
    queues = [f"q{i}" for i in range(MAX_WORKER_QUEUES)]
    registered = _register(api, queues=queues, capabilities={"tags": ["x"] * MAX_TAGS})
    assert registered.status_code == 201, registered.text
    assert registered.json()["queues"] == queues


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        (
            _action(
                parameters=[
                    {"name": f"p{i}", "type": "int"} for i in range(MAX_ACTION_PARAMETERS + 1)
                ]
            ),
            "parameters",
        ),
        (
            _action(
                parameters=[
                    {"name": "p", "type": "int", "allowed": list(range(MAX_ALLOWED_VALUES + 1))}
                ]
            ),
            "parameters.0.allowed",
        ),
        (
            {"name": "a", "kind": "openjd", "command": ["x"] * (MAX_COMMAND_ARGS + 1)},
            "command",
        ),
        (_action(requirements={"tags": ["t"] * (MAX_TAGS + 1)}), "requirements.tags"),
        (_action(queue=HOSTILE), "queue"),
        (_action(queue="q" * (MAX_NAME_LENGTH + 1)), "queue"),
    ],
    ids=["parameters", "allowed", "command", "tags", "queue-name", "queue-length"],
)
def test_an_action_definition_is_bounded(api, definition, field):
    _refused(api.post("/v1/actions", json=definition), field)
    _nothing_created(api)


def test_a_queue_name_is_held_to_one_rule_on_every_path(api):
    assert api.post("/v1/actions", json=_action()).status_code == 201
    for name in (HOSTILE, "", "-lead", "q" * (MAX_NAME_LENGTH + 1), "a b"):
        _refused(api.post("/v1/operations", json={"action": "a", "queue": name}), "queue")
        _refused(
            api.post("/v1/operations:bulk", json={"invocations": [{"action": "a", "queue": name}]}),
            "invocations.0.queue",
        )
        if name:
            _refused(
                api.put(f"/v1/queues/{quote(name, safe='')}", json={"priority": 1}), "path.name"
            )
    assert api.get("/v1/operations").json()["items"] == []
    assert [q["name"] for q in api.get("/v1/queues").json()["items"]] == ["default"]
    fine = api.post("/v1/operations", json={"action": "a", "queue": "gpu.v2_x-1"})
    assert fine.status_code == 201, fine.text
    assert api.put("/v1/queues/gpu.v2_x-1", json={"priority": 1}).status_code == 200


def test_bulk_invocations_and_heartbeats_are_bounded(api):
    one = {"action": "a"}
    _refused(
        api.post("/v1/operations:bulk", json={"invocations": [one] * (MAX_BULK_INVOKE + 1)}),
        "invocations",
    )
    worker = _register(api).json()["id"]
    held = [{"session_action_id": f"sa_{i}", "lease_epoch": 1} for i in range(MAX_HELD + 1)]
    _refused(api.post(f"/v1/workers/{worker}:heartbeat", json={"held": held}), "held")


def test_queues_are_paged_highest_priority_first(api):
    settings = {"q-a": 5, "q-b": 5, "q-c": -3, "q-d": 1000, "q-e": 0, "q-f": 5, "q-g": -1000}
    for name, priority in settings.items():
        assert api.put(f"/v1/queues/{name}", json={"priority": priority}).status_code == 200
    seen: list[tuple[int, str]] = []
    cursor = None
    while True:
        page = api.get("/v1/queues", params={"limit": 3, "cursor": cursor}).json()
        assert len(page["items"]) <= 3
        seen += [(q["priority"], q["name"]) for q in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = sorted({**settings, "default": 0}.items(), key=lambda kv: (-kv[1], kv[0]))
    assert seen == [(p, n) for n, p in expected]
    assert len(api.get("/v1/queues").json()["items"]) == len(settings) + 1
    for bad in ("%%%", "bm90IGEgY3Vyc29y", "IjE6PGltZz4i"):  # damaged, "not a cursor", "1:<img>"
        _refused(api.get("/v1/queues", params={"cursor": bad}), "cursor")
    _refused(api.get("/v1/queues", params={"limit": 501}), "query.limit")
