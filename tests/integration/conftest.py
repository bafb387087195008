"""Real servers and workers on loopback, over each backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from oprun.store import open_store
from oprun.testing import Server, Worker
from tests.conftest import fresh_database


@pytest.fixture
def store(database_url):
    """The store itself over a fresh database, for its contract tests."""
    s = open_store(database_url)
    yield s
    s.close()


@pytest.fixture
def project(store):
    """A project in `store`."""
    return store.create_project("p")


@pytest.fixture
def server(database_url, tmp_path):
    """A real `oprun server` (short leases, fast reaper) over a fresh database."""
    srv = Server(
        database_url=database_url,
        lease_seconds=2.0,
        reap_interval=0.25,
        log_path=tmp_path / "server.log",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_server(request, tmp_path_factory) -> Iterator[Server]:
    """One real server per test module and backend, for tests kept apart by project.

    Starting a server per test is most of what API-only tests cost; these tests
    each take a project of their own (`tenant`) instead of a database of their own.
    """
    folder = tmp_path_factory.mktemp(f"shared-{request.param}")
    with fresh_database(request.param, folder) as url:
        srv = Server(
            database_url=url, lease_seconds=2.0, reap_interval=0.25, log_path=folder / "server.log"
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


@dataclass(frozen=True)
class Tenant:
    """A project of its own on a shared server: its URL and its first admin token."""

    url: str
    token: str
    project_id: str


@pytest.fixture
def tenant(shared_server: Server) -> Tenant:
    """A new project on the module's shared server, with an admin token of its own."""
    created = httpx.post(
        f"{shared_server.url}/v1/projects",
        json={"name": f"test-{uuid.uuid4().hex[:8]}"},
        headers={"Authorization": f"Bearer {shared_server.token}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    return Tenant(shared_server.url, body["token"], body["project"]["id"])


@pytest.fixture
def api(server):
    """An httpx client authenticated as the server's (or the tenant's) admin."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def start_worker(server, tmp_path):
    """Start real worker agents serving tests.integration.actions:app; stopped after the test."""
    started: list[Worker] = []

    def start(concurrency: int = 2, grace: float = 3.0, **kw) -> Worker:
        worker = Worker(
            server,
            app="tests.integration.actions:app",
            concurrency=concurrency,
            grace=grace,
            log_path=tmp_path / f"worker{len(started)}.log",
            **kw,
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=15)
