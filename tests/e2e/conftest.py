"""End-to-end fixtures: the real `oprun` command, run as a subprocess, against a real server.

The server, API client and worker fixtures are the integration ones; here they run on
SQLite only (the backend does not matter to the CLI, and it keeps the suite fast).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from oprun.testing import Server, Worker
from tests.integration.conftest import api, server, start_worker, tenant

__all__ = ["api", "server", "start_worker", "tenant"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: on PYTHONPATH so workers import `tests.integration.actions`."""

TEST_ACTIONS = ("echo", "progress", "stubborn", "once", "fail")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OPRUN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPRUN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass(frozen=True)
class Ran:
    """How one run of the CLI ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"oprun {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


Cli = Callable[..., Ran]


def run_cli(url: str, token: str, *args: str, timeout: float = 60) -> Ran:
    """Run `python -m oprun ARGS` with OPRUN_URL/OPRUN_TOKEN set and nothing else of ours."""
    done = subprocess.run(
        [sys.executable, "-m", "oprun", *args],
        env=clean_env(OPRUN_URL=url, OPRUN_TOKEN=token),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(tuple(args), done.returncode, done.stdout, done.stderr)


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """End-to-end tests use SQLite only."""
    return sqlite_url


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server per test module (SQLite), for tests kept apart by project (`tenant`)."""
    folder = tmp_path_factory.mktemp("shared")
    srv = Server(
        database_url=f"sqlite:///{folder / 'oprun.db'}",
        lease_seconds=2.0,
        reap_interval=0.25,
        log_path=folder / "server.log",
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def cli(server: Server) -> Cli:
    """Run the `oprun` CLI against the test server as its admin (`token=` overrides)."""

    def run(*args: str, token: str | None = None, timeout: float = 60) -> Ran:
        return run_cli(server.url, server.token if token is None else token, *args, timeout=timeout)

    return run


@pytest.fixture
def worker(start_worker: Callable[..., Worker], api: httpx.Client) -> Iterator[Worker]:
    """One worker serving tests.integration.actions:app, once its actions are registered."""
    agent = start_worker(concurrency=2, grace=2.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert agent.process is not None
        if agent.process.poll() is not None:
            pytest.fail(f"the worker exited with {agent.process.returncode} before registering")
        names = {a["name"] for a in api.get("/v1/actions").json()["items"]}
        if names >= set(TEST_ACTIONS):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker did not register its actions within 30 s")
    yield agent
