"""Proofs of issue 10: the server's own outage costs its healthy workers nothing.

Real `oprun server` and worker processes (lease 2 s, 4 s under the stepped clock; reaper
every 0.25 s) run
tests.integration.outage_actions, whose marker files count how often each task ran,
whatever the server says.

1. The database is cut for four leases under load. The machine's PostgreSQL is shared
   by every test, so it is never stopped: the server reaches it through a TCP proxy of
   the test's own, which the test cuts (every connection closed, new ones refused)
   and restores.
2. The server's clock steps forward by two leases, on SQLite (whose clock is the
   server process's): the server runs under libfaketime (Debian's `faketime`), whose
   offset file the test rewrites mid-run.

Each test prints its measured figures on the terminal (`figure`), even without `-s`.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from oprun.testing import Server, Worker
from tests.conftest import fresh_database
from tests.integration._logs import tails
from tests.integration._tcp_proxy import TcpProxy

APP = "tests.integration.outage_actions:app"
LEASE = 2.0
STEPPED_LEASE = 4.0
"""The clock-step proof's lease. Its server runs under libfaketime, which reads the clock
file at every call, and on a loaded CI machine heartbeats were seen to take over 1.3 s,
most of a 2-s lease's margin: a lease lapsing then tells nothing of the step."""
REAP_INTERVAL = 0.25
WORKERS = 3
CONCURRENCY = 4
LIBFAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), None)
"""Debian's libfaketime (`apt-get install faketime`; .ci/run installs it)."""


# -- helpers ----------------------------------------------------------------------------
def _engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url)


def _rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def _succeeded(engine: Engine) -> int:
    return int(
        _rows(engine, "SELECT COUNT(*) AS n FROM operations WHERE status = 'SUCCEEDED'")[0]["n"]
    )


def _eventually(check: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until `check()` is true; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _markers(folder: Path, kind: str) -> Counter[str]:
    """How many `start` or `done` markers each task has (one per attempt that got there)."""
    if not folder.exists():
        return Counter()
    return Counter(p.name.split("-")[1] for p in folder.glob(f"{kind}-*"))


def _invoke(server: Server, marks: Path, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    invocations = [
        {
            "action": "work",
            "parameters": {"marker_dir": str(marks), "seconds": rng.uniform(0.3, 1.5)},
        }
        for _ in range(n)
    ]
    response = httpx.post(
        f"{server.url}/v1/operations:bulk",
        json={"invocations": invocations},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
    )
    response.raise_for_status()
    return [op["id"] for op in response.json()["operations"]]


def _forgiven(log: Path) -> list[float]:
    """The silences the server forgave, in seconds, from its log."""
    found = re.findall(r"event=own_silence seconds=([0-9.]+)", log.read_text(errors="replace"))
    return [float(s) for s in found]


@contextlib.contextmanager
def _fleet(server: Server, tmp_path: Path) -> Iterator[list[Worker]]:
    """`WORKERS` real workers serving the outage actions; stopped after the block."""
    workers: list[Worker] = []
    try:
        for i in range(WORKERS):
            workers.append(
                Worker(
                    server,
                    app=APP,
                    concurrency=CONCURRENCY,
                    grace=1.0,
                    log_path=tmp_path / f"worker{i}.log",
                ).start()
            )
        yield workers
    finally:
        for worker in workers:
            worker.stop(timeout=15)


def _outcome(engine: Engine, marks: Path, workers: list[Worker]) -> dict[str, Any]:
    """What the run left: exits, operations by status, attempts by status, double runs."""
    starts = _markers(marks, "start")
    return {
        "exited": [
            w.process.returncode for w in workers if w.process and w.process.poll() is not None
        ],
        "operations": Counter(
            {
                r["status"]: int(r["n"])
                for r in _rows(
                    engine, "SELECT status, COUNT(*) AS n FROM operations GROUP BY status"
                )
            }
        ),
        "attempts": Counter(
            {
                r["status"]: int(r["n"])
                for r in _rows(
                    engine, "SELECT status, COUNT(*) AS n FROM session_actions GROUP BY status"
                )
            }
        ),
        "workers": Counter(r["status"] for r in _rows(engine, "SELECT status FROM workers")),
        "ran_twice": {task for task, n in starts.items() if n > 1},
    }


def _lapses(engine: Engine, folder: Path) -> str:
    """What a failure needs told of attempts that ended INTERRUPTED: each one's times and
    why, and what the server and the workers warned of or reaped."""
    rows = _rows(
        engine,
        "SELECT sa.id, sa.worker_id, sa.created_at, sa.ended_at, sa.lease_expires_at,"
        " h.detail FROM session_actions sa LEFT JOIN status_history h"
        " ON h.entity_id = sa.id AND h.status = 'INTERRUPTED' WHERE sa.status = 'INTERRUPTED'",
    )
    warned = tails(
        sorted(folder.glob("*.log")),
        lambda line: "WARNING" in line or "event=reaped" in line,
        25,
        "last warnings",
    )
    return f"interrupted: {rows}\n{warned}"


# -- proof 1 ----------------------------------------------------------------------------
def test_database_down_for_four_leases_under_load_stops_no_worker_and_loses_nothing(
    tmp_path: Path, figure: Callable[[str], None]
) -> None:
    """The database is unreachable for 4 leases while 12 slots are busy, then back.

    No worker exits or is given up; every operation ends SUCCEEDED; none that had
    finished before the outage runs again; work finished during the outage is
    accepted when it is reported after it.
    """
    n, outage = 240, 4 * LEASE
    marks = tmp_path / "marks"
    with fresh_database("postgres", tmp_path) as url:
        proxy = TcpProxy(("127.0.0.1", 5432)).start()
        proxied = make_url(url).set(host="127.0.0.1", port=proxy.port)
        server = Server(
            database_url=proxied.render_as_string(hide_password=False),
            lease_seconds=LEASE,
            reap_interval=REAP_INTERVAL,
            log_path=tmp_path / "server.log",
        )
        engine = _engine(url)  # the test's own reads go around the proxy
        try:
            server.start()
            with _fleet(server, tmp_path) as workers:
                ops = _invoke(server, marks, n, seed=10)
                _eventually(lambda: _succeeded(engine) >= n // 4, 120, f"{n // 4} done")
                finished_before = set(_markers(marks, "done"))
                proxy.cut()
                cut_at = time.monotonic()
                time.sleep(outage)
                done_in_outage = set(_markers(marks, "done")) - finished_before
                before = _succeeded(engine)
                proxy.start()
                back = time.monotonic()
                first = _eventually(lambda: _succeeded(engine) > before, 60, "a completion")
                all_done = _eventually(
                    lambda: _succeeded(engine) == len(ops), 120, "every operation SUCCEEDED"
                )
                outcome = _outcome(engine, marks, workers)
        finally:
            server.stop()
            proxy.cut()
            engine.dispose()
    forgiven = _forgiven(tmp_path / "server.log")
    again = outcome["ran_twice"] & finished_before
    figure(
        f"database cut {back - cut_at:.1f} s ({outage / LEASE:g} leases of {LEASE:g} s) under "
        f"load ({n} operations, {WORKERS}x{CONCURRENCY} slots): server forgave "
        f"{', '.join(f'{s:.1f} s' for s in forgiven) or 'nothing'}; "
        f"{len(outcome['exited'])} workers exited, workers {dict(outcome['workers'])}; "
        f"first completion {first:.2f} s after the database came back, all {n} SUCCEEDED "
        f"{first + all_done:.1f} s after; {len(finished_before)} finished before the outage, "
        f"{len(again)} of them ran again; {len(done_in_outage)} finished during it; "
        f"{len(outcome['ran_twice'])} tasks ran twice overall; attempts {dict(outcome['attempts'])}"
    )
    assert outcome["exited"] == [], "workers exited"
    assert outcome["workers"]["NOT_RESPONDING"] == 0, outcome["workers"]
    assert outcome["operations"] == {"SUCCEEDED": n}, outcome["operations"]
    assert again == set(), f"{len(again)} tasks finished before the outage ran again"
    assert outcome["attempts"]["INTERRUPTED"] == 0, "leases lapsed over the outage"


# -- proof 2 ----------------------------------------------------------------------------
def test_a_server_clock_step_of_two_leases_stops_no_worker_and_loses_no_lease(
    tmp_path: Path, figure: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's clock steps forward by 2 leases under load; work keeps completing.

    libfaketime (0.9.10) steps the process's monotonic clock with its wall clock
    (FAKETIME_DONT_FAKE_MONOTONIC=1 makes Python's `time.sleep` fail with EINVAL), so the
    server's timers also fire early: harsher than an NTP step, never gentler.
    """
    if LIBFAKETIME is None:
        pytest.skip("libfaketime is missing: apt-get install faketime")
    n, step = 150, 2 * STEPPED_LEASE
    marks, clock = tmp_path / "marks", tmp_path / "clock"
    _set_clock(clock, 0)
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    server = Server(
        database_url=url,
        lease_seconds=STEPPED_LEASE,
        reap_interval=REAP_INTERVAL,
        log_path=tmp_path / "server.log",
    )
    engine = _engine(url)
    try:
        with monkeypatch.context() as env:  # the server alone runs on the fake clock
            env.setenv("LD_PRELOAD", str(LIBFAKETIME))
            env.setenv("FAKETIME_TIMESTAMP_FILE", str(clock))
            env.setenv("FAKETIME_NO_CACHE", "1")
            server.start()
        with _fleet(server, tmp_path) as workers:
            ops = _invoke(server, marks, n, seed=20)
            _eventually(lambda: _succeeded(engine) >= n // 4, 120, f"{n // 4} done")
            before = _succeeded(engine)
            _set_clock(clock, step)
            stepped_at = time.monotonic()
            first = _eventually(lambda: _succeeded(engine) > before, 60, "a completion")
            _eventually(
                lambda: _server_clock_ahead(engine) > step - 1, 10, "the server's clock steps"
            )
            ahead = _server_clock_ahead(engine)
            _eventually(lambda: _succeeded(engine) == len(ops), 120, "every operation SUCCEEDED")
            all_done = time.monotonic() - stepped_at
            outcome = _outcome(engine, marks, workers)
    finally:
        server.stop()
        engine.dispose()
    forgiven = _forgiven(tmp_path / "server.log")
    figure(
        f"server clock stepped +{step:g} s ({step / STEPPED_LEASE:g} leases; the server read "
        f"{ahead:+.1f} s) under load ({n} operations, {WORKERS}x{CONCURRENCY} slots): "
        f"server forgave {', '.join(f'{s:.1f} s' for s in forgiven) or 'nothing'}; "
        f"{len(outcome['exited'])} workers exited, workers {dict(outcome['workers'])}; "
        f"first completion {first:.2f} s after the step, all {n} SUCCEEDED "
        f"{all_done:.1f} s after; {len(outcome['ran_twice'])} tasks ran twice; "
        f"attempts {dict(outcome['attempts'])}"
    )
    assert outcome["exited"] == [], "workers exited"
    assert outcome["workers"]["NOT_RESPONDING"] == 0, outcome["workers"]
    assert outcome["operations"] == {"SUCCEEDED": n}, outcome["operations"]
    assert outcome["attempts"]["INTERRUPTED"] == 0, "leases lapsed over the clock step\n" + (
        _lapses(engine, tmp_path)
    )
    assert outcome["ran_twice"] == set()


def _set_clock(path: Path, offset: float) -> None:
    """libfaketime's offset for the server, written whole (it rereads the file every call)."""
    partial = path.with_suffix(".partial")
    partial.write_text(f"{offset:+g}\n")
    partial.rename(path)


def _server_clock_ahead(engine: Engine) -> float:
    """How far the server's clock is ahead of this one, by the last time it wrote down."""
    (row,) = _rows(engine, "SELECT MAX(at) AS at FROM status_history")
    return float(row["at"]) - time.time()
