"""Listing session actions by operation, session and task: REST and both SDK twins.

A scripted worker (the worker protocol over HTTP, no agent) makes the attempts: it
claims three operations' tasks and gives some back (`released`), so one task gets
several session actions, each in its own session, before they succeed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import event

from oprun import AsyncClient, Client, ValidationError
from oprun.store import open_store
from tests.integration.conftest import Tenant

DEFINITION = {
    "name": "echo",
    "entrypoint": "tests.integration.actions:echo",
    "parameters": [{"name": "value", "type": "int"}],
}


@dataclass(frozen=True)
class Attempts:
    """Three operations and the session actions made for them, in the order they were made."""

    ops: list[str]
    """Operation ids: the first ran three times, the second twice, the third once."""
    tasks: dict[str, str]
    """The one task of each operation."""
    made: dict[str, list[str]]
    """Session action ids of each operation, oldest first."""


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server: no server start per test."""
    return tenant


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def _claim(api: httpx.Client, worker_id: str, n: int) -> list[dict]:
    response = api.post(f"/v1/workers/{worker_id}:claim", json={"max": n, "wait": 0})
    assert response.status_code == 200, response.text
    return response.json()["assignments"]


def _report(api: httpx.Client, worker_id: str, assignment: dict, *kinds: str) -> None:
    reports = [
        {
            "session_action_id": assignment["session_action_id"],
            "lease_epoch": assignment["lease_epoch"],
            "kind": kind,
        }
        | ({"result": assignment["parameters"]["value"]} if kind == "succeeded" else {})
        for kind in kinds
    ]
    response = api.post(f"/v1/workers/{worker_id}:report", json={"reports": reports})
    assert response.status_code == 200, response.text
    assert all(o["accepted"] for o in response.json()["outcomes"]), response.text


@pytest.fixture
def attempts(api: httpx.Client) -> Attempts:
    assert api.post("/v1/actions", json=DEFINITION).status_code == 201
    created = api.post(
        "/v1/operations:bulk",
        json={"invocations": [{"action": "echo", "parameters": {"value": i}} for i in range(3)]},
    )
    assert created.status_code == 200, created.text
    ops = [op["id"] for op in created.json()["operations"]]
    worker = api.post("/v1/workers", json={"name": "scripted", "hostname": "test"})
    assert worker.status_code == 201, worker.text
    wid = worker.json()["id"]
    tasks: dict[str, str] = {}
    made: dict[str, list[str]] = {op: [] for op in ops}
    # Round 1 claims all three; rounds 2 and 3 claim what was given back.
    give_back = [{ops[0], ops[1]}, {ops[0]}, set()]
    for returned in give_back:
        for a in _claim(api, wid, 3):
            tasks[a["operation_id"]] = a["task_id"]
            made[a["operation_id"]].append(a["session_action_id"])
            if a["operation_id"] in returned:
                _report(api, wid, a, "running", "released")
            else:
                _report(api, wid, a, "running", "succeeded")
    assert [len(made[op]) for op in ops] == [3, 2, 1], made
    return Attempts(ops=ops, tasks=tasks, made=made)


def _all(api: httpx.Client, **params: object) -> list[dict]:
    response = api.get("/v1/session-actions", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_session_actions_list_by_operation_task_and_session(api, attempts):
    first, second, third = attempts.ops
    for op in attempts.ops:
        listed = _all(api, operation_id=op)
        assert [sa["id"] for sa in listed] == attempts.made[op]  # oldest first
        assert {sa["operation_id"] for sa in listed} == {op}
        assert {sa["task_id"] for sa in listed} == {attempts.tasks[op]}
        assert [sa["definition"]["taskRun"]["taskId"] for sa in listed] == [
            attempts.tasks[op]
        ] * len(listed)
        assert len({sa["session_id"] for sa in listed}) == len(listed)  # one session per claim
        assert [sa["status"] for sa in listed] == ["INTERRUPTED"] * (len(listed) - 1) + [
            "SUCCEEDED"
        ]
        by_task = _all(api, task_id=attempts.tasks[op])
        assert [sa["id"] for sa in by_task] == attempts.made[op]
        # The older per-operation endpoint answers the same attempts.
        old = api.get(f"/v1/operations/{op}/session-actions").json()
        assert [sa["id"] for sa in old["items"]] == attempts.made[op]

    middle = _all(api, operation_id=first)[1]
    assert [sa["id"] for sa in _all(api, session_id=middle["session_id"])] == [middle["id"]]
    # Filters narrow together.
    assert [sa["id"] for sa in _all(api, operation_id=first, session_id=middle["session_id"])] == [
        middle["id"]
    ]
    assert _all(api, operation_id=first, task_id=attempts.tasks[second]) == []
    assert _all(api, operation_id=third, session_id=middle["session_id"]) == []
    assert _all(api, operation_id="op_nosuch") == []


def test_session_actions_page_with_an_opaque_cursor(api, attempts):
    first = attempts.ops[0]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"operation_id": first, "limit": 1} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/session-actions", params=params).json()
        pages += 1
        seen += [sa["id"] for sa in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == attempts.made[first] and pages >= 3
    two = api.get("/v1/session-actions", params={"task_id": attempts.tasks[first], "limit": 2})
    assert [sa["id"] for sa in two.json()["items"]] == attempts.made[first][:2]
    rest = api.get(
        "/v1/session-actions",
        params={"task_id": attempts.tasks[first], "cursor": two.json()["next_cursor"]},
    ).json()
    assert [sa["id"] for sa in rest["items"]] == attempts.made[first][2:]
    assert rest["next_cursor"] is None
    _error(
        api.get("/v1/session-actions", params={"operation_id": first, "cursor": "%%%"}),
        400,
        "VALIDATION",
    )
    _error(
        api.get("/v1/session-actions", params={"operation_id": first, "cursor": "MQ"}),  # "1"
        400,
        "VALIDATION",
    )
    for limit in (0, 501):
        _error(
            api.get("/v1/session-actions", params={"operation_id": first, "limit": limit}),
            400,
            "VALIDATION",
        )


@pytest.mark.parametrize(
    "params", [{}, {"operation_id": ""}, {"limit": 5}, {"session_id": " ", "task_id": ""}]
)
def test_listing_session_actions_without_a_filter_is_a_400_naming_the_filters(api, params):
    error = _error(api.get("/v1/session-actions", params=params), 400, "VALIDATION")
    for name in ("operation_id", "session_id", "task_id"):
        assert name in error["message"], error
    assert error["details"]["fields"] == ["operation_id", "session_id", "task_id"]


def test_the_list_is_in_the_openapi_document_and_refuses_overlong_ids(api):
    spec = api.get("/openapi.json").json()
    listing = spec["paths"]["/v1/session-actions"]["get"]
    assert listing["operationId"] == "listSessionActionsByFilter"
    assert {p["name"] for p in listing["parameters"]} == {
        "operation_id",
        "session_id",
        "task_id",
        "cursor",
        "limit",
    }
    assert spec["paths"]["/v1/operations/{operation_id}/session-actions"]["get"]["operationId"] == (
        "listSessionActions"
    )
    error = _error(api.get("/v1/session-actions", params={"task_id": "t" * 65}), 400, "VALIDATION")
    assert error["details"]["field"] == "query.task_id", error


def test_session_actions_of_another_project_match_nothing(server, api, shared_server, attempts):
    first = attempts.ops[0]
    # Projects are made by admins of the server's first project, not by a tenant's.
    created = httpx.post(
        f"{shared_server.url}/v1/projects",
        json={"name": "other"},
        headers={"Authorization": f"Bearer {shared_server.token}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    other = {"Authorization": f"Bearer {created.json()['token']}"}
    sa = _all(api, operation_id=first)[0]
    for params in (
        {"operation_id": first},
        {"task_id": attempts.tasks[first]},
        {"session_id": sa["session_id"]},
    ):
        response = httpx.get(f"{server.url}/v1/session-actions", params=params, headers=other)
        assert response.status_code == 200 and response.json()["items"] == [], response.text
    _error(
        httpx.get(f"{server.url}/v1/session-actions/{sa['id']}", headers=other), 404, "NOT_FOUND"
    )
    _error(
        httpx.get(f"{server.url}/v1/operations/{first}/session-actions", headers=other),
        404,
        "NOT_FOUND",
    )
    _error(
        httpx.get(f"{server.url}/v1/session-actions", params={"operation_id": first}),
        401,
        "UNAUTHENTICATED",
    )
    viewer = api.post("/v1/tokens", json={"name": "viewer", "role": "viewer"}).json()["secret"]
    response = httpx.get(
        f"{server.url}/v1/session-actions",
        params={"operation_id": first},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert [s["id"] for s in response.json()["items"]] == attempts.made[first]


def test_sdk_twins_list_session_actions_page_by_page(server, attempts):
    first, second, _ = attempts.ops
    with Client(server.url, server.token) as client:
        listed = list(client.session_actions.list(operation_id=first, page_size=1))
        assert [sa.id for sa in listed] == attempts.made[first]
        assert [sa.id for sa in client.session_actions.list(task_id=attempts.tasks[second])] == (
            attempts.made[second]
        )
        assert [sa.id for sa in client.session_actions.list(operation_id=first, limit=2)] == (
            attempts.made[first][:2]
        )
        session = listed[0].session_id
        assert [sa.id for sa in client.session_actions.list(session_id=session)] == [listed[0].id]
        assert [sa.id for sa in client.operations.get(first).session_actions()] == (
            attempts.made[first]
        )
        with pytest.raises(ValidationError, match="operation_id, session_id, task_id"):
            client.session_actions.list()

    async def run() -> None:
        async with AsyncClient(server.url, server.token) as aclient:
            got = [sa.id async for sa in aclient.session_actions.list(first, page_size=2)]
            assert got == attempts.made[first]
            by_task = aclient.session_actions.list(task_id=attempts.tasks[first], limit=1)
            assert [sa.id async for sa in by_task] == attempts.made[first][:1]
            op = await aclient.operations.get(first)
            assert [sa.id async for sa in op.session_actions()] == attempts.made[first]
            with pytest.raises(ValidationError):
                aclient.session_actions.list(session_id="")

    asyncio.run(run())


@pytest.mark.parametrize("column", ["operation_id", "session_id", "task_id"])
def test_each_session_action_filter_is_served_by_an_index(database_url, column):
    """The store's page query by any one filter reads an index on it, never the whole table."""
    store = open_store(database_url)
    ran: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM session_actions" in statement:
            ran.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.find_session_actions("prj_x", after="sa_0", limit=50, **{column: "x_1"})
        ((statement, parameters),) = ran
        with store.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plan = " | ".join(r[-1] for r in found)
                assert "USING INDEX ix_session_actions_" in plan and f"({column}=?" in plan, plan
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: make it show
                found = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                plan = " | ".join(r[0] for r in found)
                assert "Seq Scan" not in plan, plan
                assert re.search(rf"Index Cond: \(+{column}\)::text = ", plan), plan
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
        store.close()
