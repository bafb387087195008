"""Lists that were unbounded are paged like every other list, on each backend.

`GET /v1/tokens`, `GET /v1/operations/{id}/tasks` and `GET /v1/operations/{id}/session-actions`
answer `{"items", "next_cursor"}` with keyset cursors and the usual `limit` bounds; the
SDK follows their pages.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Iterator

import httpx
import pytest

from oprun.sdk import AsyncClient, Client
from tests.integration.conftest import Tenant

FRAMES = 7
TEMPLATE = {
    "specificationVersion": "jobtemplate-2023-09",
    "name": "Frames",
    "steps": [
        {
            "name": "Render",
            "parameterSpace": {
                "taskParameterDefinitions": [
                    {"name": "Frame", "type": "INT", "range": f"1-{FRAMES}"}
                ]
            },
            "script": {"actions": {"onRun": {"command": "echo", "args": ["{{Task.Param.Frame}}"]}}},
        }
    ],
}


@pytest.fixture
def api(tenant: Tenant) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=tenant.url, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=30
    ) as client:
        yield client


def _walk(api: httpx.Client, path: str, limit: int) -> tuple[list[str], int]:
    """Every id of a paged list, page by page: (ids, pages)."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        answer = api.get(path, params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        pages += 1
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


def _refused(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


def _bounds_are_checked(api: httpx.Client, path: str) -> None:
    _refused(api.get(path, params={"cursor": "%%%"}))
    _refused(api.get(path, params={"cursor": "MTI"}))  # a cursor holding an int, not an id
    _refused(api.get(path, params={"limit": 0}))
    _refused(api.get(path, params={"limit": 501}))


def test_tokens_are_paged_oldest_first(api: httpx.Client, tenant: Tenant) -> None:
    made = [
        api.post("/v1/tokens", json={"name": f"t{i}", "role": "viewer"}).json()["token"]["id"]
        for i in range(5)
    ]
    api.delete(f"/v1/tokens/{made[0]}")  # revoked tokens are listed too
    ids, pages = _walk(api, "/v1/tokens", 2)
    # The tenant's admin and five; a full last page is followed by an empty one.
    assert len(ids) == len(set(ids)) == 6 and pages == 4
    assert ids == sorted(ids) and ids[1:] == made
    assert len(api.get("/v1/tokens").json()["items"]) == 6  # the default page holds them
    _bounds_are_checked(api, "/v1/tokens")
    with Client(tenant.url, tenant.token) as client:
        assert [t.id for t in client.tokens.list(page_size=2)] == ids
        assert [t.id for t in client.tokens.list(limit=3)] == ids[:3]


def test_an_operations_tasks_are_paged(api: httpx.Client, tenant: Tenant) -> None:
    saved = api.post("/v1/actions", json={"name": "frames", "kind": "openjd", "template": TEMPLATE})
    assert saved.status_code == 201, saved.text
    op = api.post("/v1/operations", json={"action": "frames"}).json()
    path = f"/v1/operations/{op['id']}/tasks"
    ids, pages = _walk(api, path, 3)
    assert pages == 3 and len(ids) == len(set(ids)) == FRAMES and ids == sorted(ids)
    first = api.get(path, params={"limit": 3}).json()
    # The cursor is the position after the last item: the next page starts right after it.
    after = api.get(path, params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [t["id"] for t in after["items"]] == ids[3:6]
    assert all(t["operation_id"] == op["id"] for t in first["items"] + after["items"])
    _bounds_are_checked(api, path)
    _refused(api.get("/v1/operations/op_missing/tasks"), 404)
    with Client(tenant.url, tenant.token) as client:
        assert [t.id for t in client.operations.tasks(op["id"], page_size=2)] == ids
        assert [t.id for t in client.operations.get(op["id"]).tasks()] == ids
    # The web UI's operation page and its live part show one page of tasks, by `cursor`.
    with httpx.Client(base_url=tenant.url, cookies={"oprun_session": tenant.token}) as web:
        whole = web.get(f"/operations/{op['id']}")
        assert whole.status_code == 200 and all(f"Task {i}:" in whole.text for i in ids)
        live = web.get(f"/operations/{op['id']}/live", params={"cursor": first["next_cursor"]})
        assert live.status_code == 200
        assert [i for i in ids if f"Task {i}:" in live.text] == ids[3:]
        assert web.get(f"/operations/{op['id']}", params={"cursor": "%%%"}).status_code == 400


def test_an_operations_session_actions_are_paged(api: httpx.Client, tenant: Tenant) -> None:
    saved = api.post("/v1/actions", json={"name": "frames", "kind": "openjd", "template": TEMPLATE})
    assert saved.status_code == 201, saved.text
    op = api.post("/v1/operations", json={"action": "frames"}).json()
    registration = {"name": "scripted", "hostname": "test", "capabilities": {"kinds": ["openjd"]}}
    worker = api.post("/v1/workers", json=registration).json()
    claimed = api.post(f"/v1/workers/{worker['id']}:claim", json={"max": FRAMES, "wait": 0})
    assert claimed.status_code == 200, claimed.text
    made = sorted(a["session_action_id"] for a in claimed.json()["assignments"])
    assert len(made) == FRAMES  # one attempt per task: more than a page of 3
    path = f"/v1/operations/{op['id']}/session-actions"
    ids, pages = _walk(api, path, 3)
    assert pages == 3 and ids == made
    first = api.get(path, params={"limit": 3}).json()
    assert first["next_cursor"] is not None
    # The cursor is the position after the last item: the next page starts right after it.
    after = api.get(path, params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [sa["id"] for sa in after["items"]] == ids[3:6]
    assert all(sa["operation_id"] == op["id"] for sa in first["items"] + after["items"])
    assert [sa["id"] for sa in api.get(path).json()["items"]] == ids  # the default page
    _bounds_are_checked(api, path)
    _refused(api.get("/v1/operations/op_missing/session-actions"), 404)
    with Client(tenant.url, tenant.token) as client:
        assert [sa.id for sa in client.operations.session_actions(op["id"], page_size=2)] == ids
        assert [sa.id for sa in client.operations.session_actions(op["id"], limit=4)] == ids[:4]
        assert [sa.id for sa in client.operations.get(op["id"]).session_actions()] == ids

    async def walk_async() -> None:
        async with AsyncClient(tenant.url, tenant.token) as aclient:
            pages = aclient.operations.session_actions(op["id"], page_size=2)
            assert [sa.id async for sa in pages] == ids
            got = await aclient.operations.get(op["id"])
            assert [sa.id async for sa in got.session_actions()] == ids

    asyncio.run(walk_async())
    # The web UI's operation page and its live part show one page of session actions, by
    # `attempts_cursor`; each pager keeps the other list's page.
    tasks_cursor = api.get(f"/v1/operations/{op['id']}/tasks", params={"limit": 3}).json()
    with httpx.Client(base_url=tenant.url, cookies={"oprun_session": tenant.token}) as web:
        whole = web.get(f"/operations/{op['id']}")
        assert whole.status_code == 200 and all(f'title="{i}"' in whole.text for i in ids)
        both = {"cursor": tasks_cursor["next_cursor"], "attempts_cursor": first["next_cursor"]}
        live = web.get(f"/operations/{op['id']}/live", params=both)
        assert live.status_code == 200
        assert [i for i in ids if f'title="{i}"' in live.text] == ids[3:]
        links = html.unescape(live.text)
        assert f'/operations/{op["id"]}?cursor={both["cursor"]}">« First session' in links
        assert f'?attempts_cursor={both["attempts_cursor"]}">« First tasks' in links
        bad = web.get(f"/operations/{op['id']}", params={"attempts_cursor": "%%%"})
        assert bad.status_code == 400
