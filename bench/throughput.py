"""Throughput and latency of oprun on SQLite and PostgreSQL, printed side by side.

    python -m bench.throughput [--ops 10000] [--workers 2] [--concurrency 8]

Each backend gets a fresh database, a real `oprun server` and real `oprun worker`
processes on loopback. Figures:
- bulk submit: operations/s through POST /v1/operations:bulk (1,000 per request)
- single submit: operations/s through POST /v1/operations, one at a time
- drain: operations/s from workers starting to the last no-op SUCCEEDED
- latency: submit -> result round trip (POST, then GET :wait), p50 and p99
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from oprun.testing import Server, Worker

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGETS = {"bulk submit": "30000", "single submit": "-", "drain": "5000", "p50": "1.0", "p99": "-"}


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
    )


def _count(client: httpx.Client, status: str) -> int:
    page = client.get("/v1/operations", params={"status": status, "limit": 1}).json()
    return len(page["items"])


def run_backend(url: str, ops: int, workers: int, concurrency: int, logs: Path) -> dict[str, float]:
    server = Server(database_url=url, log_path=logs / "server.log").start()
    figures: dict[str, float] = {}
    try:
        with _client(server) as client:
            client.post(
                "/v1/actions",
                json={"name": "noop", "entrypoint": "oprun.examples:noop", "max_attempts": 3},
            ).raise_for_status()
            # bulk submit
            started = time.perf_counter()
            for offset in range(0, ops, 1000):
                batch = [{"action": "noop"} for _ in range(min(1000, ops - offset))]
                client.post("/v1/operations:bulk", json={"invocations": batch}).raise_for_status()
            figures["bulk submit"] = ops / (time.perf_counter() - started)
            # single submit
            singles = min(1000, ops)
            started = time.perf_counter()
            for _ in range(singles):
                client.post("/v1/operations", json={"action": "noop"}).raise_for_status()
            figures["single submit"] = singles / (time.perf_counter() - started)
            total = ops + singles
            # drain
            fleet = [
                Worker(server, concurrency=concurrency, log_path=logs / f"worker{i}.log").start()
                for i in range(workers)
            ]
            started = time.perf_counter()
            while any(_count(client, s) for s in ("QUEUED", "SCHEDULED", "RUNNING")):
                time.sleep(0.05)
            figures["drain"] = total / (time.perf_counter() - started)
            # latency
            samples = []
            for _ in range(200):
                t0 = time.perf_counter()
                op = client.post("/v1/operations", json={"action": "noop"}).json()
                done = client.get(f"/v1/operations/{op['id']}:wait", params={"timeout": 30}).json()
                samples.append((time.perf_counter() - t0) * 1000)
                assert done["status"] == "SUCCEEDED", done
            samples.sort()
            figures["p50"] = statistics.median(samples)
            figures["p99"] = samples[int(len(samples) * 0.99) - 1]
            for worker in fleet:
                worker.stop()
    finally:
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            logs = Path(tmp) / backend
            logs.mkdir()
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                results[backend] = run_backend(url, args.ops, args.workers, args.concurrency, logs)
                continue
            name = f"oprun_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
                results[backend] = run_backend(url, args.ops, args.workers, args.concurrency, logs)
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    units = {
        "bulk submit": "ops/s",
        "single submit": "ops/s",
        "drain": "ops/s",
        "p50": "ms",
        "p99": "ms",
    }
    names = list(results)
    print(
        f"oprun throughput, {args.ops} no-op operations, {args.workers} workers x {args.concurrency}"
    )
    print(f"{'figure':<16}{'unit':<7}" + "".join(f"{n:>12}" for n in names) + f"{'target':>10}")
    for key, unit in units.items():
        row = "".join(f"{results[n][key]:>12.1f}" for n in names)
        print(f"{key:<16}{unit:<7}{row}{TARGETS[key]:>10}")


if __name__ == "__main__":
    main()
