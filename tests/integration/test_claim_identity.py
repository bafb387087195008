"""Claims and reports skip re-reading a worker seen live; its status still decides.

The API process remembers a worker's project and queues after its first call
(`WorkerService._seen`), so a claim that finds work is one transaction. These tests
prove that what the worker's status decides did not move: a stopped worker gets
nothing and hears so, another project's token gets nothing of it.
"""

from __future__ import annotations

import httpx

NOOP = {"name": "noop", "kind": "python", "entrypoint": "oprun.examples:noop"}


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _worker(client: httpx.Client) -> str:
    made = client.post("/v1/workers", json={"name": "w", "hostname": "h", "actions": [NOOP]})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def test_a_stopped_worker_takes_nothing_after_claims_that_did(tenant):
    with _client(tenant.url, tenant.token) as client:
        worker = _worker(client)
        client.post("/v1/operations", json={"action": "noop"}).raise_for_status()
        taken = client.post(f"/v1/workers/{worker}:claim", json={"max": 1})
        assert len(taken.json()["assignments"]) == 1  # the worker is now known to this process
        op = client.post("/v1/operations", json={"action": "noop"}).json()
        stopped = client.post(f"/v1/workers/{worker}:heartbeat", json={"status": "STOPPED"})
        assert stopped.status_code == 200, stopped.text

        claim = client.post(f"/v1/workers/{worker}:claim", json={"max": 1, "wait": 5})

        assert claim.status_code == 404, claim.text
        assert "has stopped" in claim.json()["error"]["message"]
        assert claim.elapsed.total_seconds() < 4  # told at once, not after the wait
        assert client.get(f"/v1/operations/{op['id']}").json()["status"] == "QUEUED"


def test_a_known_worker_is_nothing_to_another_projects_token(tenant, shared_server):
    with _client(tenant.url, tenant.token) as client:
        worker = _worker(client)
        client.post(f"/v1/workers/{worker}:claim", json={"max": 1}).raise_for_status()
        client.post("/v1/operations", json={"action": "noop"}).raise_for_status()
    other = httpx.post(
        f"{shared_server.url}/v1/projects",
        json={"name": "other"},
        headers={"Authorization": f"Bearer {shared_server.token}"},
        timeout=30,
    ).json()
    with _client(tenant.url, other["token"]) as stranger:
        for call, body in ((":claim", {"max": 1}), (":report", {"reports": []})):
            answer = stranger.post(f"/v1/workers/{worker}{call}", json=body)
            assert answer.status_code == 404, (call, answer.text)
    with _client(tenant.url, tenant.token) as client:
        taken = client.post(f"/v1/workers/{worker}:claim", json={"max": 1}).json()
        assert len(taken["assignments"]) == 1  # still there for its own worker
