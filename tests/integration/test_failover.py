"""Two API processes over one PostgreSQL database: one is killed under load, then restarted.

Issue 10's proof. SDK callers given both URLs invoke with idempotency keys in a loop
while a worker given both URLs runs the work; the first API process gets SIGKILL in
the middle of it and is started again (same port, same database) a few seconds later.
No caller sees a failed submit, every submitted operation exists exactly once and ends
SUCCEEDED, and the worker kept working through the other process: work finished while
the first one was dead, and the worker never exited.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from oprun import Client
from oprun.domain.errors import NotFound
from oprun.testing import Server, free_port
from tests.conftest import fresh_database
from tests.e2e.conftest import ROOT, clean_env

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]  # server starts are slow when loaded

CALLERS = 4
"""SDK callers submitting at once, each with a client of its own."""
PAUSE = 0.05
"""Seconds each caller rests between two submits."""
LOAD_BEFORE = 2.0
"""Seconds of load before the first API process is killed."""
DOWN = 4.0
"""Seconds it stays dead before it is started again."""
LOAD_AFTER = 2.0
"""Seconds of load once it answers again."""
LEASE = 5.0
"""Seconds of lease: a claim whose answer the kill cut off is requeued after it lapses."""
DRAIN = 60.0
"""Seconds the worker has to finish what was submitted (far more than it needs unloaded)."""
APP = "tests.integration.actions:app"
TOKEN = f"oprun_test_{uuid.uuid4().hex}"


class Counting(httpx.HTTPTransport):
    """The real transport, counting the requests sent to each port and those that failed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        port = request.url.port or 80
        self.sent[port] += 1
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.failed[port] += 1
            raise
        if response.status_code == 503:
            self.failed[port] += 1
        return response


class Caller(threading.Thread):
    """Invokes ``echo`` with a fresh idempotency key, again and again, until told to stop."""

    def __init__(self, index: int, urls: list[str], token: str) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.transport = Counting()  # its own: closing the client closes it
        self.client = Client(urls, token, transport=self.transport)
        self.stop = threading.Event()
        self.submitted: dict[str, str] = {}
        """Operation id by idempotency key."""
        self.failures: list[str] = []
        self.slowest = 0.0

    def run(self) -> None:
        count = 0
        while not self.stop.is_set():
            key = f"caller{self.index}-{count}"
            began = time.monotonic()
            try:
                op = self.client.operations.invoke("echo", {"value": key}, idempotency_key=key)
                self.submitted[key] = op.id
            except Exception as exc:  # every failure is what the test counts
                self.failures.append(f"{key}: {exc!r}")
            self.slowest = max(self.slowest, time.monotonic() - began)
            count += 1
            time.sleep(PAUSE)
        self.client.close()


def _server(database: str, log: Path, port: int | None = None) -> Server:
    """An API process over `database` (not started), all with the same admin token."""
    return Server(
        database_url=database,
        token=TOKEN,
        port=port or free_port(),
        lease_seconds=LEASE,
        reap_interval=0.5,
        log_path=log,
    )


def _start_worker(urls: str, token: str, log: Path) -> subprocess.Popen[bytes]:
    """An ``oprun worker`` given both URLs, as an operator would start it."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "oprun", "worker", "--app", APP, "--concurrency", "4"],
            env=clean_env(OPRUN_URL=urls, OPRUN_TOKEN=token),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


def _until_registered(client: Client, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        try:
            client.actions.get("echo")
            return
        except NotFound:
            assert time.monotonic() < deadline, "the worker did not register echo in 30 s"
            time.sleep(0.1)


def test_submits_and_work_ride_out_an_api_process_killed_and_restarted(
    tmp_path: Path, figure
) -> None:
    began = time.monotonic()
    with fresh_database("postgres", tmp_path) as database:
        # Each server is made before it starts, so that `finally` stops it whatever happens.
        api1, api2 = (
            _server(database, tmp_path / "api1.log"),
            _server(database, tmp_path / "api2.log"),
        )
        again = _server(database, tmp_path / "api1-again.log", port=api1.port)  # the restart
        worker: subprocess.Popen[bytes] | None = None
        admin: Client | None = None
        callers: list[Caller] = []
        try:
            api1.start()  # it migrates the database; the second starts while the worker registers
            starting = threading.Thread(target=api2.start, daemon=True)
            starting.start()
            urls = [api1.url, api2.url]
            worker = _start_worker(",".join(urls), TOKEN, tmp_path / "worker.log")
            admin = Client(urls, TOKEN)
            _until_registered(admin, worker)
            starting.join(60)
            assert api2.process is not None and api2.process.poll() is None
            httpx.get(f"{api2.url}/v1/healthz", timeout=10).raise_for_status()
            loaded = time.monotonic()

            callers = [Caller(i, urls, TOKEN) for i in range(CALLERS)]
            for caller in callers:
                caller.start()
            time.sleep(LOAD_BEFORE)

            assert api1.process is not None
            api1.process.kill()  # SIGKILL: requests in flight are cut off
            api1.process.wait()
            killed, killed_at = time.monotonic(), datetime.now(UTC)
            time.sleep(DOWN)
            again.start()
            back, back_at = time.monotonic(), datetime.now(UTC)
            time.sleep(LOAD_AFTER)
            for caller in callers:
                caller.stop.set()
            for caller in callers:
                caller.join(60)
                assert not caller.is_alive(), f"caller {caller.index} still submitting"

            failures = [f for caller in callers for f in caller.failures]
            submitted = {k: v for caller in callers for k, v in caller.submitted.items()}
            assert failures == [], f"{len(failures)} submits failed: {failures[:5]}"
            assert len(set(submitted.values())) == len(submitted), "two keys, one operation"

            # Every operation submitted exists once, and all of them succeed.
            deadline = time.monotonic() + DRAIN
            while True:
                ops = list(admin.operations.list(page_size=500))
                waiting = [op for op in ops if not op.status.is_terminal()]
                if not waiting or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            drained = time.monotonic()
            assert not waiting, f"{len(waiting)} of {len(ops)} not done after {DRAIN:g} s"
            by_key = Counter(op.idempotency_key for op in ops)
            assert sorted(by_key) == sorted(submitted), "operations lost or unknown"
            assert max(by_key.values()) == 1, "an idempotency key has two operations"
            assert {op.id for op in ops} == set(submitted.values())
            assert Counter(op.status.value for op in ops) == {"SUCCEEDED": len(submitted)}

            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            during = [
                op for op in ops if op.ended_at is not None and killed_at < op.ended_at < back_at
            ]
            assert during, "no work finished while the first API process was dead"
        finally:
            for caller in callers:
                caller.stop.set()
            if admin is not None:
                admin.close()
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            for server in (api1, api2, again):
                server.stop()

    sent = sum(c.transport.sent[api1.port] for c in callers)
    failed = sum(c.transport.failed[api1.port] for c in callers)
    retries = sum(
        line.count("server_failover") + line.count("server_call_retry")
        for line in (tmp_path / "worker.log").read_text(errors="replace").splitlines()
    )
    figure(
        f"{len(submitted)} submits by {CALLERS} callers over 2 API processes, the first killed "
        f"for {back - killed:.1f} s: 0 failed, 0 lost, 0 twice; "
        f"{failed} of {sent} requests to it failed "
        f"and went to the other; slowest submit {max(c.slowest for c in callers):.2f} s"
    )
    figure(
        f"worker: {len(during)} operations finished while the first API process was dead; "
        f"{retries} calls retried or failed over; all {len(submitted)} done "
        f"{drained - back:.1f} s after it was back (lease {LEASE:g} s)"
    )
    figure(
        f"timeline: servers and worker up {loaded - began:.1f} s, load {killed - loaded:.1f} s, "
        f"first process down {back - killed:.1f} s, drained {drained - back:.1f} s later, "
        f"{time.monotonic() - began:.1f} s in all"
    )
