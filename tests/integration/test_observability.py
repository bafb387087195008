"""What operators see, on a real server and worker: /metrics, the worker's metrics, the logs.

One server (JSON logs) and one worker (with its metrics port) per module and backend:
the tests read what the module's work left in the metrics and the server's log.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import oprun
from oprun.testing import Server, Worker, free_port
from tests.conftest import fresh_database

FINISHED = 6
WAITING = 3
IDLE_QUEUE = "nobody-serves-this"


@dataclass
class Observed:
    server: Server
    worker_metrics: str
    log: Path
    project_id: str
    concurrency: int


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(samples, name: str, **labels: str) -> float:
    found = [
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    ]
    assert found, f"no sample {name} {labels}"
    return sum(found)


def _eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def observed(request, tmp_path_factory) -> Iterator[Observed]:
    """A server with JSON logs and a worker with a metrics port, after some work ran."""
    folder = tmp_path_factory.mktemp(f"observed-{request.param}")
    with fresh_database(request.param, folder) as url:
        server = Server(
            database_url=url,
            lease_seconds=2.0,
            reap_interval=0.25,
            log_path=folder / "server.log",
            environment={"OPRUN_LOG_FORMAT": "json"},
        ).start()
        port = free_port()
        worker = Worker(
            server,
            app="tests.integration.actions:app",
            concurrency=2,
            log_path=folder / "worker.log",
            options=("--metrics-port", str(port)),
        )
        try:
            worker.start()
            with oprun.Client(server.url, server.token) as client:
                done = [client.operations.invoke("echo", {"value": i}) for i in range(FINISHED)]
                for op in done:
                    assert op.wait(timeout=60).succeeded()
                for i in range(WAITING):
                    client.operations.invoke("echo", {"value": i}, queue=IDLE_QUEUE)
                project_id = client.operations.get(done[0].id).project_id
            yield Observed(
                server, f"http://127.0.0.1:{port}/metrics", folder / "server.log", project_id, 2
            )
        finally:
            worker.stop(timeout=15)
            server.stop()


def _scrape(observed: Observed, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or observed.server.token}"}
    return httpx.get(f"{observed.server.url}/metrics", headers=headers, timeout=30)


def test_metrics_count_requests_by_route_template_and_work_by_status(observed: Observed):
    api = httpx.Client(
        base_url=observed.server.url,
        headers={"Authorization": f"Bearer {observed.server.token}"},
        timeout=30,
    )
    with api:
        queued = api.get("/v1/operations", params={"status": "QUEUED", "limit": 500}).json()
        response = _scrape(observed)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    # Requests: one series per route template and status, never a raw path.
    assert (
        _value(
            samples,
            "oprun_http_requests_total",
            method="GET",
            route="/v1/operations/{operation_id}:wait",
            status="200",
        )
        >= FINISHED
    )
    assert (
        _value(
            samples,
            "oprun_http_requests_total",
            method="POST",
            route="/v1/workers/{worker_id}:claim",
            status="200",
        )
        >= 1
    )
    routes = {ls["route"] for n, ls, _ in samples if n == "oprun_http_requests_total"}
    assert not [r for r in routes if "op_" in r or "wk_" in r], routes
    assert _value(samples, "oprun_http_request_duration_seconds_count", route="/v1/operations") >= 1

    # Operations by status and queue, as the API counts them.
    waiting = [op for op in queued["items"] if op["queue"] == IDLE_QUEUE]
    assert len(waiting) == WAITING
    where = {"project": observed.project_id, "queue": IDLE_QUEUE}
    assert _value(samples, "oprun_operations", status="QUEUED", **where) == WAITING
    assert _value(samples, "oprun_tasks", status="QUEUED", **where) == WAITING
    assert _value(samples, "oprun_queue_depth", **where) == WAITING
    assert _value(samples, "oprun_queue_oldest_waiting_seconds", **where) > 0
    default = {"project": observed.project_id, "queue": "default"}
    for status in ("QUEUED", "SCHEDULED", "RUNNING", "CANCELING"):
        assert _value(samples, "oprun_operations", status=status, **default) == 0
    assert _value(samples, "oprun_operations_created_total", **default) == FINISHED
    assert _value(samples, "oprun_operations_created_total", **where) == WAITING

    # The worker protocol.
    assert _value(samples, "oprun_claim_duration_seconds_count") > 0
    assert _value(samples, "oprun_tasks_claimed_total", project=observed.project_id) == FINISHED
    assert _value(samples, "oprun_report_batch_size_count") > 0
    assert _value(samples, "oprun_reports_total", kind="succeeded", outcome="accepted") == FINISHED
    working = sum(
        _value(samples, "oprun_workers", project=observed.project_id, status=s)
        for s in ("IDLE", "RUNNING")
    )
    assert working == 1
    assert (
        _value(samples, "oprun_workers", project=observed.project_id, status="NOT_RESPONDING") == 0
    )
    assert _value(samples, "oprun_database_up") == 1
    assert _value(samples, "oprun_db_pool_capacity") > 0


def test_the_worker_serves_its_own_metrics(observed: Observed):
    def check():
        samples = _samples(httpx.get(observed.worker_metrics, timeout=10).text)
        assert _value(samples, "oprun_worker_slots") == observed.concurrency
        assert _value(samples, "oprun_worker_slots_busy") == 0
        assert _value(samples, "oprun_worker_server_reachable") == 1
        assert _value(samples, "oprun_worker_server_last_success_age_seconds") < 30
        assert _value(samples, "oprun_worker_tasks_claimed_total") == FINISHED
        assert _value(samples, "oprun_worker_reports_sent_total") >= FINISHED
        assert _value(samples, "oprun_worker_report_lag_seconds") == 0
        assert _value(samples, "oprun_worker_child_restarts_total") == 0
        assert _value(samples, "oprun_worker_server_calls_total", call="claim", outcome="ok") >= 1
        return samples

    _eventually(check)


def test_metrics_need_an_admin_of_the_first_project(observed: Observed):
    assert httpx.get(f"{observed.server.url}/metrics", timeout=30).status_code == 401
    created = httpx.post(
        f"{observed.server.url}/v1/projects",
        json={"name": f"tenant-{uuid.uuid4().hex[:8]}"},
        headers={"Authorization": f"Bearer {observed.server.token}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    other_admin = created.json()["token"]
    refused = _scrape(observed, other_admin)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ACCESS_DENIED"


def test_a_request_id_is_echoed_and_logged_with_the_access_line(observed: Observed):
    headers = {"Authorization": f"Bearer {observed.server.token}"}
    mine = f"obs-{uuid.uuid4().hex[:12]}"
    response = httpx.get(
        f"{observed.server.url}/v1/operations",
        headers={**headers, "X-Request-ID": mine},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == mine

    def logged():
        lines = [
            line
            for line in _log_lines(observed.log)
            if line.get("request_id") == mine and line["logger"] == "oprun.access"
        ]
        assert len(lines) == 1
        return lines[0]

    line = _eventually(logged)
    assert line["method"] == "GET" and line["route"] == "/v1/operations"
    assert line["status"] == 200 and line["duration_ms"] >= 0
    assert line["project_id"] == observed.project_id
    assert line["level"] == "info" and line["time"].endswith("Z")
    # Probes and scrapes stay out of the access log.
    assert not [
        line
        for line in _log_lines(observed.log)
        if line.get("route") in ("/metrics", "/v1/healthz")
    ]


@pytest.mark.parametrize(
    "given",
    [b"x" * 500, b"two words", b'quote"d', "caf\u00e9".encode(), b""],
    ids=["huge", "space", "quote", "latin1", "empty"],
)
def test_a_garbage_request_id_is_replaced(observed: Observed, given: bytes):
    response = httpx.get(
        f"{observed.server.url}/v1/healthz", headers={"X-Request-ID": given}, timeout=30
    )
    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    assert echoed.encode() != given and len(echoed) == 32 and int(echoed, 16) >= 0


def test_no_token_or_authorization_header_reaches_the_log(observed: Observed):
    bogus = f"oprun_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    base = observed.server.url
    for token in (observed.server.token, bogus):
        for path in ("/v1/operations", "/v1/operations/op_nope", "/nowhere"):
            httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    marker = f"obs-{uuid.uuid4().hex[:12]}"
    httpx.get(
        f"{base}/v1/operations",
        headers={"Authorization": f"Bearer {bogus}", "X-Request-ID": marker},
        timeout=30,
    )
    _eventually(lambda: _assert_in(marker, observed.log.read_text()))
    text = observed.log.read_text()
    assert observed.server.token not in text
    assert bogus not in text
    assert "authorization" not in text.lower()


def _assert_in(needle: str, haystack: str) -> None:
    assert needle in haystack
