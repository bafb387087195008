"""`wait()` and the event stream ride out a real server restart with no exception.

The server subprocess is stopped while waits are in flight (sync, async, the CLI)
and an event stream is open; after a few seconds a new server starts on the same
port and database, a worker comes back, and every waiter gets the finished
operation; the stream resumes with ``Last-Event-ID``, missing and repeating nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oprun import AsyncClient, Client
from oprun.domain import models
from oprun.testing import Server, Worker
from tests.e2e.conftest import ROOT, clean_env
from tests.integration._live import wait_for_actions

DOWN_SECONDS = 3.0
WAIT_TIMEOUT = 90.0


class Waiter(threading.Thread):
    """Runs `target` in a thread and keeps its result, its error and when it returned."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.target_ = target
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            self.result = self.target_()
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.ended_at = time.monotonic()


def _connections(pid: int, port: int) -> int:
    """How many established TCP connections process `pid` has to `port` on loopback."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    inodes.add(fields[9])
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
    return count


def _until_connected(pid: int, port: int, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _connections(pid, port) < count:
        assert time.monotonic() < deadline, f"process {pid} never opened {count} connections"
        time.sleep(0.05)


def test_wait_and_events_ride_out_a_server_restart(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'oprun.db'}"
    first = Server(database_url=database, log_path=tmp_path / "server1.log").start()
    second: Server | None = None
    workers: list[Worker] = []
    cli: subprocess.Popen[str] | None = None
    try:
        # A worker registers the test actions, then leaves: the operation stays queued.
        worker = Worker(first, app="tests.integration.actions:app", log_path=tmp_path / "w1.log")
        workers.append(worker.start())
        wait_for_actions(first, {"echo"}, worker)
        worker.stop()

        with Client(first.url, first.token) as client:
            op = client.operations.invoke("echo", {"value": "survived"})
        assert op.state == "QUEUED"

        def sync_wait() -> str:
            with Client(first.url, first.token) as client:
                return client.operations.get(op.id).wait(timeout=WAIT_TIMEOUT).state

        def async_wait() -> str:
            async def scenario() -> str:
                async with AsyncClient(first.url, first.token) as client:
                    done = await client.operations.wait(op.id, timeout=WAIT_TIMEOUT)
                    return done.state

            return asyncio.run(scenario())

        def stream() -> list[models.Event]:
            seen: list[models.Event] = []
            with (
                Client(first.url, first.token) as client,
                contextlib.closing(client.events.stream(after=0, entity_id=op.id)) as events,
            ):
                for event in events:
                    seen.append(event)
                    if event.data.get("status") == "SUCCEEDED":
                        return seen
            return seen

        waiters = {
            name: Waiter(fn)
            for name, fn in [("sync", sync_wait), ("async", async_wait), ("events", stream)]
        }
        for waiter in waiters.values():
            waiter.start()
        cli = subprocess.Popen(
            [sys.executable, "-m", "oprun", "ops", "wait", op.id, "--timeout", str(WAIT_TIMEOUT)],
            env=clean_env(OPRUN_URL=first.url, OPRUN_TOKEN=first.token),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Every waiter is in its long poll, the stream is open: the test process holds
        # three connections to the server and the CLI one (its start-up takes over a
        # second on a loaded machine; a plain get made while the server is down fails).
        _until_connected(os.getpid(), first.port, 3)
        _until_connected(cli.pid, first.port, 1)
        time.sleep(0.2)

        stopped = time.monotonic()
        first.stop()
        assert all(w.is_alive() for w in waiters.values()), (
            "a waiter gave up when the server stopped"
        )
        time.sleep(DOWN_SECONDS)
        second = Server(
            database_url=database,
            port=first.port,
            token=first.token,
            log_path=tmp_path / "server2.log",
        ).start()
        restarted = time.monotonic()
        worker = Worker(second, app="tests.integration.actions:app", log_path=tmp_path / "w2.log")
        workers.append(worker.start())

        for waiter in waiters.values():
            waiter.join(WAIT_TIMEOUT)
        out, err = cli.communicate(timeout=WAIT_TIMEOUT)
        for name, waiter in waiters.items():
            assert waiter.error is None, f"{name}: {waiter.error!r}"
            assert not waiter.is_alive(), f"{name} still waits"
        assert waiters["sync"].result == "SUCCEEDED"
        assert waiters["async"].result == "SUCCEEDED"
        assert cli.returncode == 0, (out, err)
        assert f"{op.id} echo SUCCEEDED" in out

        events: list[models.Event] = waiters["events"].result
        ids = [e.id for e in events]
        assert ids == sorted(set(ids)), f"events repeated or out of order: {ids}"
        assert events[0].type == "operation.created"
        assert events[-1].data["status"] == "SUCCEEDED"

        latest = max(w.ended_at or 0.0 for w in waiters.values())
        print(
            f"\nserver down {restarted - stopped:.1f} s (stop {DOWN_SECONDS:.0f} s + start); "
            f"every waiter returned {latest - restarted:.1f} s after the restart "
            f"({', '.join(f'{n} {(w.ended_at or 0) - restarted:.1f} s' for n, w in waiters.items())})"
        )
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.communicate()
        for worker in workers:
            worker.stop(timeout=15)
        first.stop()
        if second is not None:
            second.stop()
