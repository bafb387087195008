"""The rehearsal's cluster: oprun on seven test hosts, as a team that outgrew one machine runs it.

A database host (a private PostgreSQL), two API hosts (``oprun server``, same port on
each) and four worker hosts (``oprun worker`` given both API URLs in ``OPRUN_URL``),
each a network namespace on one bridge (`tests.integration._netns`), all started with
this project's Python. The test's own calls go from an eighth host, ``ops``: its
threads join that host's namespace, so they reach the API hosts as any other
machine would. The test reads the database for its checks over PostgreSQL's Unix
socket, a path on this machine rather than an address.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from oprun import Client
from tests.e2e.conftest import ROOT, clean_env
from tests.integration._logs import log_lines, tails
from tests.integration._netns import Host, Network, PrivatePostgres

T = TypeVar("T")

APP = "tests.integration.outage_actions:app"
"""Its `work` sleeps and leaves a marker file per attempt started and finished."""
API_PORT = 8710
LEASE = 2.0
REAP_INTERVAL = 0.25
SLOTS = 4
"""Tasks each worker host runs at once."""
WORKER_HOSTS = ("w1", "w2", "w3", "w4")
START_TIMEOUT = 60.0
"""Seconds a process may take to answer or register (the machine is shared and loaded)."""


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, and SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Cluster:
    """The hosts and their processes; `close()` ends every process and host it started."""

    def __init__(self, folder: Path, token: str) -> None:
        self.folder = folder
        self.token = token
        self.markers = folder / "markers"
        self.net = Network()
        self.db: PrivatePostgres | None = None
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._client: Client | None = None
        self._restarts: dict[str, int] = {}

    # -- building -----------------------------------------------------------------------
    def start(self) -> Cluster:
        """Make the hosts, start the database and both API hosts."""
        net = self.net.start()
        db_host = net.add("db", 10)
        for i, name in enumerate(("api1", "api2")):
            net.add(name, 11 + i)
        for i, name in enumerate(WORKER_HOSTS):
            net.add(name, 21 + i)
        ops = net.add("ops", 5)
        self.db = PrivatePostgres(db_host, net.prefix).create()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="ops", initializer=ops.enter)
        self._client = Client(self.urls, self.token)
        self.start_api("api1")  # it migrates the database; the second finds it done
        self.start_api("api2")
        return self

    @property
    def urls(self) -> list[str]:
        """Both API hosts' URLs, as workers and callers are given them."""
        return [f"http://{self.net.hosts[n].address}:{API_PORT}" for n in ("api1", "api2")]

    def host(self, name: str) -> Host:
        """The host called `name`."""
        return self.net.hosts[name]

    def start_api(self, name: str) -> None:
        """Start (or restart) ``oprun server`` on API host `name`; return once it is ready."""
        assert self.db is not None
        host = self.host(name)
        count = self._restarts[name] = self._restarts.get(name, -1) + 1
        self.servers[name] = host.popen(
            [
                sys.executable, "-m", "oprun", "server",
                "--host", host.address, "--port", str(API_PORT), "--database-url", self.db.url,
            ],
            env=clean_env(
                OPRUN_BOOTSTRAP_TOKEN=self.token,
                OPRUN_LEASE_SECONDS=f"{LEASE:g}",
                OPRUN_REAP_INTERVAL=f"{REAP_INTERVAL:g}",
            ),
            log=self.folder / f"{name}-{count}.log",
            cwd=ROOT,
        )  # fmt: skip
        url = f"http://{host.address}:{API_PORT}"
        deadline = time.monotonic() + START_TIMEOUT
        while not self.on_ops(_ready, url):
            process = self.servers[name]
            assert process.poll() is None, f"{name}'s server exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{name}'s server not ready in {START_TIMEOUT:g} s"
            time.sleep(0.1)

    def workers_up(self, count: int) -> None:
        """Make sure the first `count` worker hosts run a worker; wait until all registered."""
        started = []
        for name in WORKER_HOSTS[:count]:
            if name in self.workers:
                continue
            self.workers[name] = self.host(name).popen(
                [
                    sys.executable, "-m", "oprun", "worker", "--app", APP,
                    "--concurrency", str(SLOTS), "--name", name, "--grace", "2",
                ],
                env=clean_env(OPRUN_URL=",".join(self.urls), OPRUN_TOKEN=self.token),
                log=self.folder / f"{name}.log",
                cwd=ROOT,
            )  # fmt: skip
            started.append(name)
        deadline = time.monotonic() + START_TIMEOUT
        while started:
            known = {row[0] for row in self.sql("SELECT name FROM workers")}
            started = [name for name in started if name not in known]
            for name in started:
                process = self.workers[name]
                assert process.poll() is None, f"{name}'s worker exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{started} did not register in time"
            time.sleep(0.1)

    # -- using ---------------------------------------------------------------------------
    def on_ops(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on a thread of the ops host (where every call to an API host goes)."""
        assert self._pool is not None
        return self._pool.submit(call, *args).result()

    def client_call(self, call: Callable[[Client], T]) -> T:
        """`call(client)` with the test's SDK client (both API URLs), on the ops host."""
        assert self._client is not None
        return self.on_ops(call, self._client)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of `query`, read over the database's Unix socket."""
        assert self.db is not None
        with self.db.connect() as conn:
            return list(conn.execute(query, params or None).fetchall())

    def worker_log(self, name: str) -> str:
        """What worker host `name`'s agent has logged."""
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def story(self, hosts: Iterable[str], tail: int = 15) -> str:
        """What a failed wait for `hosts` needs told: the workers' rows, the tasks, each
        host's last log lines and last calls, and what the API hosts logged but calls."""
        rows = self.sql(
            "SELECT name, id, status, last_heartbeat_at, (SELECT count(*) FROM session_actions"
            " sa WHERE sa.worker_id = w.id AND sa.status = 'RUNNING') FROM workers w"
            " ORDER BY name, created_at"
        )
        told = [
            f"workers (name, id, status, last heartbeat, running): {rows}",
            f"tasks: {self.sql('SELECT status, count(*) FROM tasks GROUP BY status')}",
        ]
        servers = [
            self.folder / f"{name}-{count}.log" for name, count in sorted(self._restarts.items())
        ]
        served = [line for path in servers for line in log_lines(path)]
        for name in sorted(hosts):
            ids = [row[1] for row in rows if row[0] == name]
            calls = [line for line in served if any(f"worker_id={i}" in line for i in ids)]
            told.append(
                f"--- {name}, last lines:\n" + "\n".join(self.worker_log(name).splitlines()[-tail:])
            )
            told.append(f"--- {name}'s last calls:\n" + "\n".join(calls[-tail:]))
        told.append(
            tails(servers, lambda line: " oprun.access " not in line, tail, "last lines but calls")
        )
        return "\n".join(told)

    # -- ending --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, then the database, then delete the hosts."""
        for group in (self.workers, self.servers):  # workers first: they say goodbye
            stops = [threading.Thread(target=stop_process, args=(p,)) for p in group.values()]
            for thread in stops:  # at once: each worker drains for its grace
                thread.start()
            for thread in stops:
                thread.join()
        if self._client is not None:
            self._client.close()
        if self._pool is not None:
            self._pool.shutdown()
        if self.db is not None:
            self.db.close()
        self.net.close()


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/v1/readyz", timeout=2).status_code == 200
    return False
