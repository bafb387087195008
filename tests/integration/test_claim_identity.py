"""Claims and reports skip re-reading a worker seen live; its status still decides.

The API process remembers a worker's project and queues after its first call
(`WorkerService._seen`), so a claim that finds work is one transaction. These tests
prove that what the worker's status decides did not move: a stopped worker gets
nothing and hears so, another project's token gets nothing of it. A claim right
after one that came up short waits without looking (`WorkerService._short`), yet
still finds work published before or while it waits. Of the claims parked when work
is published, those a claim before them found the queues empty for go back to waiting
without a look (`WorkerService._emptied`), and any other still looks.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from oprun.service.workers import SHORT_CLAIM_MEMORY
from oprun.testing import Server

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


def test_a_claim_right_after_a_short_one_still_finds_new_work(tenant):
    with _client(tenant.url, tenant.token) as client:
        worker = _worker(client)
        short = client.post(f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 0})
        assert short.json()["assignments"] == []  # came up short: remembered a moment
        op = client.post("/v1/operations", json={"action": "noop"}).json()

        claim = client.post(f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 5})

        assert [a["operation_id"] for a in claim.json()["assignments"]] == [op["id"]]
        assert claim.elapsed.total_seconds() < 4  # found at once, not after the wait


def test_work_submitted_while_such_a_claim_waits_wakes_it(tenant):
    with _client(tenant.url, tenant.token) as client:
        worker = _worker(client)
        client.post(f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 0}).raise_for_status()
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                client.post, f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 10}
            )
            time.sleep(0.5)  # the claim is parked by now
            op = client.post("/v1/operations", json={"action": "noop"}).json()
            claim = waiting.result(timeout=30)
        assert [a["operation_id"] for a in claim.json()["assignments"]] == [op["id"]]
        assert claim.elapsed.total_seconds() < 8


def _metric(client: httpx.Client, name: str) -> float:
    """The server's sample `name` from its /metrics (all projects)."""
    text = client.get("/metrics").raise_for_status().text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _statements(client: httpx.Client) -> float:
    return _metric(client, "oprun_database_statements_total")


def _statements_around(client: httpx.Client, call: Callable[[], object]) -> float:
    before = _statements(client)
    call()
    return _statements(client) - before


def _fewest_statements_around(client: httpx.Client, call: Callable[[], object]) -> float:
    """What `call` costs, the fewest of three tries: PostgreSQL's store reads the
    database's clock once a second, and a reading may fall in any one window."""
    return min(_statements_around(client, call) for _ in range(3))


def test_a_claim_right_after_a_short_one_waits_without_a_database_call(database_url, tmp_path):
    quiet = {"OPRUN_RETENTION_INTERVAL": "3600"}  # nothing periodic between the readings
    server = Server(
        database_url=database_url, reap_interval=3600, environment=quiet, log_path=tmp_path / "s"
    ).start()
    try:
        with _client(server.url, server.token) as client:
            worker = _worker(client)
            claim = f"/v1/workers/{worker}:claim"
            scrapes = _fewest_statements_around(client, lambda: None)  # the readings' cost
            client.post(claim, json={"max": 8}).raise_for_status()  # the worker is known

            looked = _fewest_statements_around(client, lambda: client.post(claim, json={"max": 8}))
            waited = _statements_around(
                client, lambda: client.post(claim, json={"max": 8, "wait": 0.3})
            )
            time.sleep(SHORT_CLAIM_MEMORY + 0.1)
            forgot = _statements_around(
                client, lambda: client.post(claim, json={"max": 8, "wait": 0.3})
            )
        look = looked - scrapes  # one look: the worker and its queues, the waiting tasks
        assert look >= 2
        # A moment after a short claim, with nothing new, the claim waits without a
        # look; it looks once when its wait ends. Long after, it looks first, too.
        # PostgreSQL's store also reads the database's clock once a second, which may
        # fall in either of these two windows (not in the fewest of three): one
        # statement, where a look more would be `look` more.
        clock = {0, 1} if database_url.startswith("postgresql") else {0}
        assert waited - (scrapes + look) in clock
        assert forgot - (scrapes + 2 * look) in clock
    finally:
        server.stop()


def test_a_claim_after_a_short_one_on_a_limited_queue_sees_room_freed_by_a_report(tenant):
    # A task ending frees a place in a concurrency-limited queue without any wake-up:
    # a claim right after one that the limit held back must look, not wait.
    with _client(tenant.url, tenant.token) as client:
        queue = f"limited-{time.monotonic_ns()}"
        configured = client.put(f"/v1/queues/{queue}", json={"priority": 0, "max_concurrency": 1})
        assert configured.status_code == 200, configured.text
        workers = [
            client.post(
                "/v1/workers",
                json={"name": f"w{i}", "hostname": "h", "queues": [queue], "actions": [NOOP]},
            ).json()["id"]
            for i in range(2)
        ]
        for _ in range(2):
            client.post("/v1/operations", json={"action": "noop", "queue": queue})
        time.sleep(0.6)  # the reaper's wake-up for tasks just come due is past (0.25 s rounds)
        (held,) = client.post(f"/v1/workers/{workers[0]}:claim", json={"max": 1}).json()[
            "assignments"
        ]
        held_back = client.post(f"/v1/workers/{workers[1]}:claim", json={"max": 8}).json()
        assert held_back["assignments"] == []  # the queue's one place is taken
        report = {
            "session_action_id": held["session_action_id"],
            "lease_epoch": held["lease_epoch"],
            "kind": "succeeded",
        }
        done = client.post(f"/v1/workers/{workers[0]}:report", json={"reports": [report]})
        assert done.json()["outcomes"][0]["accepted"], done.text

        claim = client.post(f"/v1/workers/{workers[1]}:claim", json={"max": 8, "wait": 5})

        assert len(claim.json()["assignments"]) == 1
        assert claim.elapsed.total_seconds() < 4  # found at once, not at the wait's end


def _claim_looks(client: httpx.Client) -> float:
    """How many times the server has looked for work for a claim (all projects)."""
    return _metric(client, "oprun_claim_duration_seconds_count")


def _park(pool: ThreadPoolExecutor, client: httpx.Client, workers: list[str], wait: float):
    return [
        pool.submit(client.post, f"/v1/workers/{w}:claim", json={"max": 8, "wait": wait})
        for w in workers
    ]


def _waiting(client: httpx.Client) -> float:
    """Claims parked in the server until work is published (all projects)."""
    return _metric(client, "oprun_claims_waiting")


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.02)


def _claim_on_a_socket(tenant, worker: str, wait: float) -> socket.socket:
    """A claim sent on a connection of its own, which the test can hang up."""
    url = httpx.URL(tenant.url)
    body = json.dumps({"max": 8, "wait": wait}).encode()
    sock = socket.create_connection((url.host, url.port))
    sock.sendall(
        (
            f"POST /v1/workers/{worker}:claim HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {tenant.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    return sock


def _answer(sock: socket.socket) -> dict[str, Any]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200, response.read()
    answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_a_publication_costs_one_look_however_many_claims_of_its_queues_are_parked(
    tenant, shared_server
):
    operator = _client(shared_server.url, shared_server.token)  # /metrics is the server's
    with _client(tenant.url, tenant.token) as client, operator:
        workers = [_worker(client) for _ in range(4)]
        for worker in workers:  # known here, and each looked once: nothing to find
            client.post(f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 0})
        _until(lambda: _waiting(operator) == 0, "no claim of another test parked")
        parked = [_claim_on_a_socket(tenant, worker, wait=60) for worker in workers]
        try:
            _until(lambda: _waiting(operator) == len(workers), "every claim parked")
            for worker in workers:  # they never run, and leases here last 2 s
                beat = client.post(f"/v1/workers/{worker}:heartbeat", json={"status": "IDLE"})
                assert beat.status_code == 200, beat.text
            before = _claim_looks(operator)
            op = client.post("/v1/operations", json={"action": "noop"}).json()
            answered, _, _ = select.select(parked, [], [], 30)
            assert len(answered) == 1
            answer = _answer(answered[0])
            time.sleep(0.5)  # the others, woken with it, went back to waiting (or looked)
        finally:
            for sock in parked:  # the others hang up: they end without a look
                sock.close()
        _until(lambda: _waiting(operator) == 0, "the claims hung up on ended")
        looks = _claim_looks(operator) - before
    assert [a["operation_id"] for a in answer["assignments"]] == [op["id"]]
    # One claim looked and took it; the three others, woken by the same publication,
    # knew the queue was empty without a look.
    assert looks == 1


def test_a_parked_claim_of_a_queue_the_first_look_did_not_serve_still_looks(tenant):
    with _client(tenant.url, tenant.token) as client:
        queue = f"other-{time.monotonic_ns()}"
        default = [_worker(client) for _ in range(3)]
        made = client.post(
            "/v1/workers",
            json={"name": "o", "hostname": "h", "queues": [queue], "actions": [NOOP]},
        )
        other = made.json()["id"]
        for worker in [*default, other]:
            client.post(f"/v1/workers/{worker}:claim", json={"max": 8, "wait": 0})
        with ThreadPoolExecutor(4) as pool:
            parked = _park(pool, client, [*default, other], wait=5)
            time.sleep(0.5)
            op = client.post("/v1/operations", json={"action": "noop", "queue": queue}).json()
            found = parked[-1].result(timeout=30)
            for claim in parked[:-1]:
                claim.result(timeout=30)
        assert [a["operation_id"] for a in found.json()["assignments"]] == [op["id"]]
        assert found.elapsed.total_seconds() < 3  # at its publication, not its wait's end
