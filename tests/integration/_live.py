"""One real server and one real worker shared by a whole test module (SQLite).

The SDK, CLI and docs tests do not depend on the backend (the store has its own
contract tests on both), so they share one server per module to stay fast.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from oprun.testing import Server, Worker


@dataclass(frozen=True)
class Live:
    """A running server and worker."""

    server: Server
    worker: Worker

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token


def wait_for_actions(server: Server, names: set[str], worker: Worker, timeout: float = 30) -> None:
    """Return once every action in `names` is registered; fail if the worker dies first."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        while True:
            assert worker.process is not None
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.process.returncode}")
            found = {
                a["name"] for a in http.get("/v1/actions", params={"limit": 500}).json()["items"]
            }
            if names <= found:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"actions {sorted(names - found)} not registered in {timeout} s")
            time.sleep(0.05)


@contextlib.contextmanager
def live(
    folder: Path,
    app: str = "tests.integration.actions:app",
    actions: frozenset[str] = frozenset({"echo", "progress", "once", "fail"}),
    concurrency: int = 4,
) -> Iterator[Live]:
    """A server over a fresh SQLite file in `folder`, and a worker serving `app`."""
    server = Server(
        database_url=f"sqlite:///{folder / 'oprun.db'}",
        lease_seconds=2.0,
        reap_interval=0.25,
        log_path=folder / "server.log",
    ).start()
    worker: Worker | None = None
    try:
        worker = Worker(
            server, app=app, concurrency=concurrency, grace=2.0, log_path=folder / "worker.log"
        ).start()
        wait_for_actions(server, set(actions), worker)
        yield Live(server, worker)
    finally:
        if worker is not None:
            worker.stop(timeout=15)
        server.stop()
