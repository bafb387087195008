"""Claim latency while retention purges a backlog of finished operations, and without.

    python -m bench.retention [--backlog 20000] [--windows 10] [--window 3]

For each backend: a fresh database holding `--backlog` finished operations (each
with its task, session, attempt, history, two log lines and events, written as a
worker's reports write them) and a real `oprun server` over it, retention off. A
client then claims waiting tasks one at a time over HTTP, as a worker does, for
`--windows` windows of `--window` seconds; in every other window the purge runs
(the service's own `purge_round`, paced as in a server) and deletes the backlog.
Windows alternate so that both sides see the same machine. Printed: claims, p50,
mean and p95 of each side, and the ratio; the proof wants the purge's within 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import func, select

from oprun.domain.models import ActionDefinition, InvocationSource
from oprun.domain.protocol import Report
from oprun.service.operations import params_digest
from oprun.service.retention import purge_round
from oprun.service.settings import Settings
from oprun.store import NewOperation, Store, open_store
from oprun.store import schema as t
from oprun.testing import Server

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fill(store: Store, project_id: str, finished: int, waiting: int, batch: int = 500) -> None:
    """`finished` operations run to SUCCEEDED, then `waiting` QUEUED ones to claim."""
    action, _ = store.save_action(
        project_id, ActionDefinition(name="noop", entrypoint="oprun.examples:noop")
    )
    worker = store.register_worker(project_id, "filler", "bench", ["default"], {})

    def invoke(n: int) -> None:
        store.create_operations(
            [
                NewOperation(
                    project_id=project_id,
                    action=action,
                    queue="default",
                    parameters={},
                    params_digest=params_digest({"n": uuid.uuid4().hex}),
                    created_by="bench",
                    source_type=InvocationSource.MANUAL,
                    source_id="bench",
                    idempotency_key=None,
                    timeout=None,
                )
                for _ in range(n)
            ]
        )

    for start in range(0, finished, batch):
        n = min(batch, finished - start)
        invoke(n)
        reports = []
        for a in store.claim(worker.id, project_id, ["default"], n, 600):
            held = {"session_action_id": a.session_action_id, "lease_epoch": a.lease_epoch}
            reports += [
                Report(**held, kind="running"),
                Report(**held, kind="progress", percent=50, message="half way"),
                Report(**held, kind="log", lines=["working", "done"]),
                Report(**held, kind="succeeded", result={"ok": True}),
            ]
        store.apply_reports(worker.id, reports)
    for start in range(0, waiting, batch):
        invoke(min(batch, waiting - start))


def finished_left(store: Any) -> int:
    """How many finished operations the database still holds."""
    with store.engine.connect() as conn:
        query = select(func.count()).where(t.operations.c.ended_at.isnot(None))
        return int(conn.execute(query).scalar_one())


class Purger:
    """The service's purge rounds on a loop of their own, switched on and off."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running: Future[None] | None = None

    async def _forever(self) -> None:
        while True:
            await purge_round(self._store, self._settings)
            await asyncio.sleep(0.05)

    @contextmanager
    def on(self) -> Iterator[None]:
        """Purge for the duration of the block."""
        self._running = asyncio.run_coroutine_threadsafe(self._forever(), self._loop)
        try:
            yield
        finally:
            self._running.cancel()
            time.sleep(0.2)  # a batch under way finishes in its thread

    def close(self) -> None:
        """Stop the loop."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def measure(
    url: str, backlog: int, windows: int, window: float, logs: Path, waiting: int = 30_000
) -> tuple[dict[str, list[float]], int, int]:
    """Claim latencies (ms) without and during a purge; finished operations before and after.

    `waiting` operations wait to be claimed: more than the windows' claims can take.
    """
    server = Server(database_url=url, lease_seconds=600, log_path=logs / "server.log")
    server.start()  # it creates the schema, the first project and its admin token
    store = open_store(url, migrate=False)
    fill(store, store.first_project().id, backlog, waiting)
    before = finished_left(store)
    settings = Settings(database_url=url, retention_days=1e-9)  # everything finished goes
    purger = Purger(store, settings)
    samples: dict[str, list[float]] = {"without purge": [], "during purge": []}
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
        ) as api:
            registered = api.post(
                "/v1/workers", json={"name": "bench", "hostname": "bench", "queues": ["default"]}
            )
            registered.raise_for_status()
            worker_id = registered.json()["id"]
            claim_path = f"/v1/workers/{worker_id}:claim"
            for w in range(windows):
                mode = "during purge" if w % 2 else "without purge"
                with purger.on() if w % 2 else nullcontext():
                    ends = time.monotonic() + window
                    while time.monotonic() < ends:
                        started = time.perf_counter()
                        got = api.post(claim_path, json={"max": 1})
                        samples[mode].append((time.perf_counter() - started) * 1000)
                        got.raise_for_status()
                        assert got.json()["assignments"], "no more waiting tasks"
        after = finished_left(store)
    finally:
        purger.close()
        server.stop()
        store.close()
    return samples, before, after


def summary(latencies: list[float]) -> dict[str, float]:
    """Count, p50, mean and p95 of latencies in ms."""
    ordered = sorted(latencies)
    return {
        "claims": len(ordered),
        "p50": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p95": ordered[int(len(ordered) * 0.95) - 1],
    }


def main() -> None:
    """Run the figure on each backend and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            logs = Path(tmp) / backend
            logs.mkdir()
            name = f"oprun_bench_{uuid.uuid4().hex[:8]}"
            if backend == "sqlite":
                url = f"sqlite:///{logs / 'bench.db'}"
            else:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
            try:
                samples, before, after = measure(url, args.backlog, args.windows, args.window, logs)
            finally:
                if backend != "sqlite":
                    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            off, on = summary(samples["without purge"]), summary(samples["during purge"])
            print(f"{backend}: purged {before - after} of {before} finished operations")
            for label, s in (("without purge", off), ("during purge", on)):
                print(
                    f"  {label:14} claims={s['claims']:5.0f} p50={s['p50']:.2f} ms "
                    f"mean={s['mean']:.2f} ms p95={s['p95']:.2f} ms"
                )
            print(
                f"  during/without: p50 {on['p50'] / off['p50']:.2f}x, "
                f"mean {on['mean'] / off['mean']:.2f}x  (target: within 1.10x)"
            )


if __name__ == "__main__":
    main()
