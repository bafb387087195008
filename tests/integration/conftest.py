"""Real servers and workers on loopback, over each backend."""

from __future__ import annotations

import httpx
import pytest

from oprun.store import open_store
from oprun.testing import Server, Worker


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


@pytest.fixture
def api(server):
    """An httpx client authenticated as the server's bootstrap admin."""
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
