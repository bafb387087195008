"""The audit log on a real server, on both backends (issue 11).

Each test takes a project of its own on the module's shared server. Floods and bad
sign-ins come from addresses of their own on loopback (127.0.0.2 and up), so the
throttle they trip never touches the other tests' 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest

from oprun.testing import Server
from tests.integration.conftest import Tenant

pytestmark = pytest.mark.usefixtures("shared_server")


def _auth(secret: str, request_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return headers


def _rid() -> str:
    return f"audit-{uuid.uuid4().hex[:12]}"


def _from(address: str) -> httpx.HTTPTransport:
    """A transport whose connections leave from `address` (another loopback address)."""
    return httpx.HTTPTransport(local_address=address)


def _audit(url: str, secret: str, **params: Any) -> list[dict[str, Any]]:
    """Every audit row `secret` may read (following the cursor), newest first."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        answer = httpx.get(f"{url}/v1/audit", params=query, headers=_auth(secret), timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return rows


def _by_request(rows: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [r for r in rows if r["request_id"] == request_id]
    assert len(found) == 1, (request_id, rows)
    return found[0]


def test_each_change_is_recorded_with_its_actor_address_and_request(tenant: Tenant) -> None:
    url, admin = tenant.url, tenant.token
    me = httpx.get(f"{url}/v1/tokens", headers=_auth(admin)).json()["items"][0]
    ids = {k: _rid() for k in ("create", "rotate", "revoke", "action1", "action2", "queue", "keep")}
    with httpx.Client(base_url=url, timeout=30) as http:
        made = http.post(
            "/v1/tokens",
            json={"name": "ci", "role": "operator", "expires_in": 3600},
            headers=_auth(admin, ids["create"]),
        )
        assert made.status_code == 201, made.text
        rotated = http.post(
            f"/v1/tokens/{made.json()['token']['id']}:rotate", headers=_auth(admin, ids["rotate"])
        )
        assert rotated.status_code == 201, rotated.text
        successor = rotated.json()["token"]["id"]
        assert (
            http.delete(f"/v1/tokens/{successor}", headers=_auth(admin, ids["revoke"])).status_code
            == 200
        )
        definition = {"name": "resize", "entrypoint": "media:resize"}
        first = http.post("/v1/actions", json=definition, headers=_auth(admin, ids["action1"]))
        assert first.status_code == 201, first.text
        second = http.post(
            "/v1/actions",
            json={**definition, "entrypoint": "media:resize_v2"},
            headers=_auth(admin, ids["action2"]),
        )
        assert second.status_code == 201, second.text
        # Saving the same definition again changes nothing: no row.
        again = http.post(
            "/v1/actions",
            json=definition | {"entrypoint": "media:resize_v2"},
            headers=_auth(admin, _rid()),
        )
        assert again.status_code == 200, again.text
        queue = http.put(
            "/v1/queues/fast",
            json={"priority": 5, "max_concurrency": 3},
            headers=_auth(admin, ids["queue"]),
        )
        assert queue.status_code == 200, queue.text
        kept = http.put(
            "/v1/projects/current/retention",
            json={"days": 7, "max_operations": None},
            headers=_auth(admin, ids["keep"]),
        )
        assert kept.status_code == 200, kept.text

    rows = _audit(url, admin)
    actor = {"token_id": me["id"], "name": me["name"], "role": "admin"}
    for row in rows:
        assert row["project_id"] == tenant.project_id
    expected = {
        "create": ("token.created", made.json()["token"]["id"]),
        "rotate": ("token.rotated", made.json()["token"]["id"]),
        "revoke": ("token.revoked", successor),
        "action1": ("action.saved", "resize"),
        "action2": ("action.saved", "resize"),
        "queue": ("queue.configured", "fast"),
        "keep": ("retention.changed", tenant.project_id),
    }
    for key, (kind, subject) in expected.items():
        row = _by_request(rows, ids[key])
        assert (row["kind"], row["subject"]) == (kind, subject), row
        assert row["actor"] == actor, row
        assert row["client"] == "127.0.0.1", row
    assert _by_request(rows, ids["create"])["details"]["role"] == "operator"
    assert _by_request(rows, ids["rotate"])["details"]["successor"] == successor
    saved = _by_request(rows, ids["action2"])["details"]
    assert saved["previous_digest"] == first.json()["digest"]
    assert saved["digest"] == second.json()["digest"] and saved["version"] == 2
    assert _by_request(rows, ids["action1"])["details"]["previous_digest"] is None
    assert _by_request(rows, ids["queue"])["details"] == {
        "priority": 5,
        "max_concurrency": 3,
        "previous": {"priority": 0, "max_concurrency": None},
    }
    assert _by_request(rows, ids["keep"])["details"]["days"] == 7
    assert len([r for r in rows if r["kind"] == "action.saved"]) == 2  # the replay wrote none
    # Newest first, and the filters narrow it.
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    tokens_only = _audit(url, admin, kind="token.created")
    assert {r["kind"] for r in tokens_only} == {"token.created"} and len(tokens_only) == 2
    assert _audit(url, admin, actor="tok_nobody") == []
    # No secret anywhere.
    text = json.dumps(rows)
    for secret in (admin, made.json()["secret"], rotated.json()["secret"]):
        assert secret not in text


def test_project_creation_is_seen_by_the_server_admin_and_its_token_by_the_project(
    shared_server: Server, tenant: Tenant
) -> None:
    created = [
        r
        for r in _audit(shared_server.url, shared_server.token, kind="project.created")
        if r["subject"] == tenant.project_id
    ]
    assert len(created) == 1 and created[0]["actor"]["role"] == "admin"
    assert created[0]["client"] == "127.0.0.1" and created[0]["request_id"]
    mine = _audit(tenant.url, tenant.token, kind="token.created")
    assert len(mine) == 1 and mine[0]["details"]["via"] == "project.created"
    assert mine[0]["project_id"] == tenant.project_id


def test_only_admins_read_it_and_only_their_own_project(
    shared_server: Server, tenant: Tenant
) -> None:
    url = tenant.url
    for role in ("viewer", "operator", "worker", "deployer"):
        made = httpx.post(
            f"{url}/v1/tokens", json={"name": role, "role": role}, headers=_auth(tenant.token)
        )
        answer = httpx.get(f"{url}/v1/audit", headers=_auth(made.json()["secret"]))
        assert answer.status_code == 403, (role, answer.text)
        assert answer.json()["error"]["code"] == "ACCESS_DENIED"
    other = httpx.post(
        f"{url}/v1/projects", json={"name": "other"}, headers=_auth(shared_server.token)
    ).json()
    theirs = _audit(url, other["token"])
    assert theirs and all(r["project_id"] == other["project"]["id"] for r in theirs)
    assert not any(r["subject"] == tenant.project_id for r in theirs)
    assert tenant.project_id not in json.dumps(theirs)


def test_a_flood_of_bad_tokens_writes_a_bounded_number_of_rows_and_no_token(
    shared_server: Server, tenant: Tenant
) -> None:
    guesses = [f"oprun_{secrets.token_urlsafe(32)}" for _ in range(200)]
    request_ids = set()
    started = time.monotonic()
    with httpx.Client(base_url=shared_server.url, transport=_from("127.0.0.2"), timeout=30) as http:
        for guess in guesses:
            rid = _rid()
            request_ids.add(rid)
            answer = http.get(
                "/v1/operations",
                headers={**_auth(guess, rid), "X-Forwarded-For": "10.9.8.7"},
            )
            assert answer.status_code in (401, 429), answer.text
    took = time.monotonic() - started
    rows = [
        r
        for r in _audit(shared_server.url, shared_server.token, kind="auth.failed")
        if r["request_id"] in request_ids
    ]
    # At most one row a second for the address (plus the second it started in).
    assert 1 <= len(rows) <= int(took) + 2, (len(rows), took)
    for row in rows:
        assert row["project_id"] is None and row["actor"] is None and row["subject"] is None
        assert row["client"] == "127.0.0.2"  # the peer, never X-Forwarded-For
        assert row["details"]["reason"] == "unknown" and row["details"]["via"] == "bearer"
    # Each row counts the failures it stands for: together, all but the last second's.
    assert sum(1 + r["details"]["unrecorded"] for r in rows) <= len(guesses)
    assert rows[-1]["details"]["unrecorded"] == 0  # the first row stands for itself
    text = json.dumps(rows)
    assert not any(guess in text for guess in guesses)
    assert "10.9.8.7" not in text
    # Server-level rows are for the first project's admins only.
    assert not [r for r in _audit(tenant.url, tenant.token) if r["project_id"] is None]


def test_an_expired_token_and_a_bad_sign_in_are_recorded(
    shared_server: Server, tenant: Tenant
) -> None:
    made = httpx.post(
        f"{tenant.url}/v1/tokens",
        json={"name": "short", "role": "viewer", "expires_in": 0.2},
        headers=_auth(tenant.token),
    ).json()
    time.sleep(0.5)
    rid = _rid()
    with httpx.Client(base_url=tenant.url, transport=_from("127.0.0.3"), timeout=30) as http:
        assert http.get("/v1/operations", headers=_auth(made["secret"], rid)).status_code == 401
    row = _by_request(_audit(tenant.url, tenant.token, kind="auth.failed"), rid)
    assert row["subject"] == made["token"]["id"] and row["details"]["reason"] == "expired"
    assert row["project_id"] == tenant.project_id and row["client"] == "127.0.0.3"
    assert made["secret"] not in json.dumps(row)

    rid, guess = _rid(), f"oprun_{secrets.token_urlsafe(32)}"
    with httpx.Client(base_url=tenant.url, transport=_from("127.0.0.4"), timeout=30) as http:
        answer = http.post(
            "/sign-in",
            data={"token": guess, "next": "/jobs"},
            headers={"Origin": tenant.url, "X-Request-ID": rid},
        )
    assert answer.status_code == 401
    row = _by_request(_audit(shared_server.url, shared_server.token, kind="auth.failed"), rid)
    assert row["details"]["via"] == "sign-in" and row["client"] == "127.0.0.4"
    assert guess not in json.dumps(row)


def test_pages_follow_each_other_without_gaps(tenant: Tenant) -> None:
    for i in range(5):
        httpx.put(f"{tenant.url}/v1/queues/q{i}", json={"priority": i}, headers=_auth(tenant.token))
    everything = _audit(tenant.url, tenant.token)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = httpx.get(
            f"{tenant.url}/v1/audit", params=params, headers=_auth(tenant.token)
        ).json()
        seen += [r["id"] for r in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [r["id"] for r in everything] and len(seen) >= 6
    bad = httpx.get(f"{tenant.url}/v1/audit", params={"kind": "nope"}, headers=_auth(tenant.token))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION"


def test_the_sdk_pages_through_it_sync_and_async(tenant: Tenant) -> None:
    import asyncio

    import oprun

    with oprun.Client(tenant.url, tenant.token) as client:
        for name in ("a", "b", "c"):
            client.tokens.create(name, "viewer")
        rows = list(client.audit.list(kind="token.created", page_size=2))
        assert len(rows) == 4  # these three and the project's first admin token
        assert all(r.kind == "token.created" for r in rows)
        assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)
        assert len(list(client.audit.list(limit=2))) == 2
        with pytest.raises(oprun.ValidationError):
            list(client.audit.list(kind="nope"))
        viewer = client.tokens.create("v", "viewer").secret

    async def read() -> list[str]:
        async with oprun.AsyncClient(tenant.url, tenant.token) as aio:
            return [r.subject or "" async for r in aio.audit.list(kind="token.created")]

    with oprun.Client(tenant.url, tenant.token) as client:
        now = [r.subject or "" for r in client.audit.list(kind="token.created")]
    assert asyncio.run(read()) == now and len(now) == 5  # the viewer's too
    with oprun.Client(tenant.url, viewer) as client, pytest.raises(oprun.AccessDenied):
        list(client.audit.list())


def test_a_refused_change_records_nothing(tenant: Tenant) -> None:
    """The row is written by the change's own transaction: a change refused, no row."""
    me = httpx.get(f"{tenant.url}/v1/tokens", headers=_auth(tenant.token)).json()["items"][0]
    last = httpx.delete(f"{tenant.url}/v1/tokens/{me['id']}", headers=_auth(tenant.token))
    assert last.status_code == 409, last.text  # the project's last admin token
    worker = httpx.post(
        f"{tenant.url}/v1/tokens", json={"name": "w", "role": "worker"}, headers=_auth(tenant.token)
    ).json()["secret"]
    definition = {"name": "resize", "entrypoint": "media:resize"}
    assert httpx.post(f"{tenant.url}/v1/actions", json=definition, headers=_auth(worker)).is_success
    moved = {**definition, "entrypoint": "media:elsewhere"}
    refused = httpx.post(f"{tenant.url}/v1/actions", json=moved, headers=_auth(worker))
    assert refused.status_code == 403, refused.text
    kinds = [r["kind"] for r in _audit(tenant.url, tenant.token)]
    assert "token.revoked" not in kinds
    assert kinds.count("action.saved") == 1  # the worker's first version, not the refused one
