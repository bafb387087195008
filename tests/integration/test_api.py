"""The REST API on a real server: errors in one shape, auth and roles, tenancy, idempotency."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Tenant

DEFINITION = {
    "name": "resize",
    "entrypoint": "tests.integration.actions:echo",
    "parameters": [
        {"name": "width", "type": "int", "minimum": 1},
        {"name": "mode", "type": "string", "required": False, "default": "fit"},
    ],
}


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server: no server start per test."""
    return tenant


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def _token(api, role: str) -> str:
    response = api.post("/v1/tokens", json={"name": f"{role}-token", "role": role})
    assert response.status_code == 201, response.text
    return response.json()["secret"]


def test_bad_input_gets_a_4xx_that_names_the_problem_and_writes_nothing(api):
    assert api.post("/v1/actions", json=DEFINITION).status_code == 201
    cases = [
        ({"action": "nope"}, 404, "NOT_FOUND", "no action 'nope'"),
        (
            {"action": "resize", "parameters": {"width": "wide"}},
            400,
            "VALIDATION",
            "'width' must be an int",
        ),
        (
            {"action": "resize", "parameters": {}},
            400,
            "VALIDATION",
            "missing required parameter 'width'",
        ),
        (
            {"action": "resize", "parameters": {"width": 1, "depth": 2}},
            400,
            "VALIDATION",
            "unknown parameter 'depth'",
        ),
        (
            {"action": "resize", "parameters": {"width": 1}, "colour": "red"},
            400,
            "VALIDATION",
            "colour: unknown field",
        ),
    ]
    for body, status, code, needle in cases:
        error = _error(api.post("/v1/operations", json=body), status, code)
        assert needle in error["message"], error
    malformed = api.post(
        "/v1/operations", content=b'{"action": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in _error(malformed, 400, "VALIDATION")["message"]
    bulk = api.post(
        "/v1/operations:bulk",
        json={
            "invocations": [
                {"action": "resize", "parameters": {"width": 1}},
                {"action": "resize", "parameters": {"width": 0}},
            ]
        },
    )
    assert _error(bulk, 400, "VALIDATION")["details"]["index"] == 1
    assert api.get("/v1/operations").json()["items"] == []  # nothing half-written


def test_a_body_over_the_limit_is_413(api):
    big = {"action": "resize", "parameters": {"width": 1, "mode": "x" * (2 * 1024 * 1024)}}
    _error(api.post("/v1/operations", json=big), 413, "TOO_LARGE")


def test_missing_or_wrong_token_is_401_and_roles_are_enforced(server, api):
    _error(httpx.get(f"{server.url}/v1/operations"), 401, "UNAUTHENTICATED")
    _error(
        httpx.get(f"{server.url}/v1/operations", headers={"Authorization": "Bearer nope"}),
        401,
        "UNAUTHENTICATED",
    )
    api.post("/v1/actions", json=DEFINITION)
    viewer = {"Authorization": f"Bearer {_token(api, 'viewer')}"}
    operator = {"Authorization": f"Bearer {_token(api, 'operator')}"}
    invoke = {"action": "resize", "parameters": {"width": 3}}
    _error(
        httpx.post(f"{server.url}/v1/operations", json=invoke, headers=viewer), 403, "ACCESS_DENIED"
    )
    created = httpx.post(f"{server.url}/v1/operations", json=invoke, headers=operator)
    assert created.status_code == 201 and created.json()["created_by"] == "operator-token"
    assert (
        httpx.get(f"{server.url}/v1/operations/{created.json()['id']}", headers=viewer).status_code
        == 200
    )
    _error(
        httpx.post(f"{server.url}/v1/actions", json=DEFINITION, headers=operator),
        403,
        "ACCESS_DENIED",
    )
    _error(
        httpx.post(
            f"{server.url}/v1/tokens", json={"name": "x", "role": "admin"}, headers=operator
        ),
        403,
        "ACCESS_DENIED",
    )


def test_another_projects_ids_are_not_found(server, api, shared_server):
    api.post("/v1/actions", json=DEFINITION)
    op = api.post("/v1/operations", json={"action": "resize", "parameters": {"width": 3}}).json()
    # Projects are made by admins of the server's first project, not by a tenant's.
    created = httpx.post(
        f"{shared_server.url}/v1/projects",
        json={"name": "other"},
        headers={"Authorization": f"Bearer {shared_server.token}"},
        timeout=30,
    )
    assert created.status_code == 201
    other = {"Authorization": f"Bearer {created.json()['token']}"}
    for method, path in [
        ("GET", f"/v1/operations/{op['id']}"),
        ("GET", f"/v1/operations/{op['id']}:wait?timeout=0"),
        ("POST", f"/v1/operations/{op['id']}:cancel"),
        ("POST", f"/v1/operations/{op['id']}:retry"),
        ("DELETE", f"/v1/operations/{op['id']}"),
        ("GET", f"/v1/operations/{op['id']}/logs"),
        ("GET", "/v1/actions/resize"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", headers=other)
        _error(response, 404, "NOT_FOUND")
    assert httpx.get(f"{server.url}/v1/operations", headers=other).json()["items"] == []


def test_an_idempotency_key_returns_the_existing_operation(api):
    api.post("/v1/actions", json=DEFINITION)
    body = {"action": "resize", "parameters": {"width": 3}, "idempotency_key": "clip-42"}
    first = api.post("/v1/operations", json=body)
    again = api.post("/v1/operations", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(api.get("/v1/operations").json()["items"]) == 1


def test_a_bulk_invoke_answers_only_ids_when_the_client_prefers_minimal(api):
    api.post("/v1/actions", json=DEFINITION)
    invocations = [{"action": "resize", "parameters": {"width": w}} for w in (3, 1, 2)]
    minimal = api.post(
        "/v1/operations:bulk",
        json={"invocations": invocations},
        headers={"Prefer": "respond-async, RETURN=minimal; x=1"},
    )
    assert minimal.status_code == 200, minimal.text
    assert minimal.headers["preference-applied"] == "return=minimal"
    assert set(minimal.json()) == {"ids"}
    widths = [
        api.get(f"/v1/operations/{i}").json()["parameters"]["width"] for i in minimal.json()["ids"]
    ]
    assert widths == [3, 1, 2]  # one id per invocation, in order
    full = api.post(
        "/v1/operations:bulk",
        json={"invocations": invocations[:1]},
        headers={"Prefer": "return=representation"},
    )
    assert "preference-applied" not in full.headers
    assert full.json()["operations"][0]["parameters"] == {"width": 3, "mode": "fit"}


def test_lists_page_with_an_opaque_cursor(api):
    api.post("/v1/actions", json=DEFINITION)
    api.post(
        "/v1/operations:bulk",
        json={
            "invocations": [{"action": "resize", "parameters": {"width": i + 1}} for i in range(7)]
        },
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/operations", params=params).json()
        seen += [op["id"] for op in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    _error(api.get("/v1/operations", params={"cursor": "%%%"}), 400, "VALIDATION")
    _error(api.get("/v1/operations", params={"limit": 100000}), 400, "VALIDATION")


def test_openapi_document_lists_the_operations(api):
    spec = api.get("/openapi.json").json()
    assert "/v1/operations/{operation_id}:wait" in spec["paths"]
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"invokeAction", "waitOperation", "getSessionAction", "claimWork"} <= ids


@pytest.mark.parametrize("timeout", [0, 0.3])
def test_wait_on_unfinished_work_answers_after_its_timeout(api, timeout):
    api.post("/v1/actions", json=DEFINITION)
    op = api.post("/v1/operations", json={"action": "resize", "parameters": {"width": 3}}).json()
    waited = api.get(f"/v1/operations/{op['id']}:wait", params={"timeout": timeout})
    assert waited.status_code == 200 and waited.json()["status"] == "QUEUED"
