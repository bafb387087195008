"""Throughput, latency and cost per operation of oprun on SQLite and PostgreSQL.

    python -m bench.throughput [--ops 10000] [--workers 2] [--concurrency 8]
    python -m bench.throughput --workers 1,2,4 --api-processes 1,2   # scaling

Every phase gets a fresh database, real `oprun server` processes and real
`oprun worker` processes on loopback. Figures:
- bulk submit: operations/s through POST /v1/operations:bulk (1,000 per request), no workers
- single submit: operations/s through POST /v1/operations, one at a time, no workers
- drain: workers up and warm; operations/s from the first bulk submit of `--ops`
  no-ops until the last one SUCCEEDED
- latency: submit -> result round trip (POST, then GET :wait), p50 and p99
and the cost of each operation in each phase: CPU µs of the server(s) and of the
workers, SQL statements and database round trips, HTTP bytes in and out
(``--pg-stats`` adds PostgreSQL's own count of transactions, which takes 22 s more
per drain). `run_oprun` is the driver `bench.compare` uses too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg

from bench.cost import COST_ROWS, Cost, Snapshot
from oprun.testing import Server, Worker

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")
TARGETS = {"bulk submit": "30000", "single submit": "-", "drain": "5000", "p50": "1.0", "p99": "-"}
UNITS = {
    "bulk submit": "ops/s",
    "single submit": "ops/s",
    "drain": "ops/s",
    "p50": "ms",
    "p99": "ms",
}
BULK = 1000
"""Operations per POST /v1/operations:bulk."""


@dataclass(frozen=True)
class Config:
    """How many processes drain: workers (each with `concurrency` slots), API servers."""

    workers: int = 2
    concurrency: int = 8
    api_processes: int = 1

    @property
    def label(self) -> str:
        """``2w x8 / 1 API``."""
        return f"{self.workers}w x{self.concurrency} / {self.api_processes} API"


@dataclass
class Run:
    """One backend's figures (ops/s and ms) and costs per operation, by phase."""

    backend: str
    config: Config
    figures: dict[str, float] = field(default_factory=dict)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database of `backend`: its URL (dropped or left in `folder` after)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"oprun_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
    )


def _servers(stack: ExitStack, url: str, count: int, logs: Path) -> list[Server]:
    """`count` API servers over one database, sharing one token, stopped with `stack`."""
    servers: list[Server] = []
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        token = servers[0].token if servers else f"oprun_bench_{uuid.uuid4().hex}"
        server = Server(database_url=url, token=token, log_path=logs / f"server{i}.log")
        server.start()
        stack.callback(server.stop)
        servers.append(server)
    return servers


def _ids(servers: Sequence[Server]) -> list[tuple[str, str, int]]:
    return [(s.url, s.token, cast(Any, s.process).pid) for s in servers]


def _submit_bulk(client: httpx.Client, ops: int) -> list[str]:
    ids: list[str] = []
    for offset in range(0, ops, BULK):
        batch = [{"action": "noop"} for _ in range(min(BULK, ops - offset))]
        # Ids, as the peers' batch enqueues answer, not a record per operation.
        response = client.post(
            "/v1/operations:bulk",
            json={"invocations": batch},
            headers={"Prefer": "return=minimal"},
        )
        response.raise_for_status()
        ids += response.json()["ids"]
    return ids


UNFINISHED = ("QUEUED", "SCHEDULED", "RUNNING")


def _unfinished(client: httpx.Client) -> bool:
    for status in UNFINISHED:
        page = client.get("/v1/operations", params={"status": status, "limit": 1}).json()
        if page["items"]:
            return True
    return False


DRAIN_LIMIT = 900.0
"""Seconds a drain may take before the bench gives up (a broken server must not hang it)."""


def _wait_all(client: httpx.Client, last: str) -> None:
    """Until every operation ended: wait on the last submitted, then poll the rest."""
    deadline = time.monotonic() + DRAIN_LIMIT

    def check() -> None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"operations still unfinished after {DRAIN_LIMIT:.0f} s")

    wait = f"/v1/operations/{last}:wait"
    while client.get(wait, params={"timeout": 30}).json()["status"] in UNFINISHED:
        check()
    while _unfinished(client):
        check()
        time.sleep(0.01)


def _register_noop(client: httpx.Client) -> None:
    client.post(
        "/v1/actions",
        json={"name": "noop", "entrypoint": "oprun.examples:noop", "max_attempts": 3},
    ).raise_for_status()


def submit_phase(url: str, ops: int, singles: int, logs: Path) -> Run:
    """Bulk and single submit figures and costs on a fresh server, no workers."""
    run = Run(backend="", config=Config())
    with ExitStack() as stack:
        servers = _servers(stack, url, 1, logs)
        with _client(servers[0]) as client:
            _register_noop(client)
            before = Snapshot.take(_ids(servers))
            started = time.perf_counter()
            _submit_bulk(client, ops)
            run.figures["bulk submit"] = ops / (time.perf_counter() - started)
            middle = Snapshot.take(_ids(servers))
            run.costs["bulk submit"] = Cost.between(before, middle, ops).per_op
            started = time.perf_counter()
            for _ in range(singles):
                client.post("/v1/operations", json={"action": "noop"}).raise_for_status()
            run.figures["single submit"] = singles / (time.perf_counter() - started)
            after = Snapshot.take(_ids(servers))
            run.costs["single submit"] = Cost.between(middle, after, singles).per_op
    return run


def _start_fleet(
    stack: ExitStack, servers: Sequence[Server], config: Config, logs: Path
) -> list[Worker]:
    """The workers, given every server's URL, each registered before this returns."""
    # A worker fails over between the URLs it is given, comma-separated.
    urls = ",".join(s.url for s in servers)
    fleet: list[Worker] = []
    with _client(servers[0]) as client:
        for i in range(config.workers):
            worker = Worker(
                _Urls(urls, servers[0].token) if len(servers) > 1 else servers[0],  # type: ignore[arg-type]
                concurrency=config.concurrency,
                log_path=logs / f"worker{i}.log",
            )
            worker.start(wait=False)
            stack.callback(worker.stop)
            fleet.append(worker)
        deadline = time.monotonic() + 60
        while len(client.get("/v1/workers", params={"limit": 500}).json()["items"]) < len(fleet):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register within 60 s")
            time.sleep(0.05)
    return fleet


@dataclass
class _Urls:
    """What `Worker` reads of its server, for a worker given several URLs."""

    url: str
    token: str


def drain_phase(
    url: str, ops: int, rtt: int, config: Config, logs: Path, pg_stats: bool = False
) -> Run:
    """Drain figure, latency and drain cost with `config`'s warm workers and servers."""
    run = Run(backend="", config=config)
    with ExitStack() as stack:
        servers = _servers(stack, url, config.api_processes, logs)
        with _client(servers[0]) as client:
            _register_noop(client)
            fleet = _start_fleet(stack, servers, config, logs)
            # Warm up: every slot starts its child process before the clock does.
            warm = _submit_bulk(client, 2 * config.workers * config.concurrency)
            _wait_all(client, warm[-1])
            pids = [w.pid for w in fleet]
            pg_url = url if pg_stats and url.startswith("postgresql") else None
            before = Snapshot.take(_ids(servers), pids, pg_url)
            started = time.perf_counter()
            ids = _submit_bulk(client, ops)
            _wait_all(client, ids[-1])
            run.figures["drain"] = ops / (time.perf_counter() - started)
            after = Snapshot.take(_ids(servers), pids, pg_url)
            run.costs["drain"] = Cost.between(before, after, ops).per_op
            samples = []
            for _ in range(rtt):
                t0 = time.perf_counter()
                op = client.post("/v1/operations", json={"action": "noop"}).json()
                done = client.get(f"/v1/operations/{op['id']}:wait", params={"timeout": 30}).json()
                samples.append((time.perf_counter() - t0) * 1000)
                assert done["status"] == "SUCCEEDED", done
            samples.sort()
            run.figures["p50"] = statistics.median(samples)
            run.figures["p99"] = samples[max(0, int(len(samples) * 0.99) - 1)]
    return run


def run_oprun(
    backend: str,
    ops: int,
    rtt: int = 200,
    singles: int | None = None,
    configs: Sequence[Config] = (Config(),),
    folder: Path | None = None,
    pg_stats: bool = False,
) -> list[Run]:
    """Every figure of `backend`: submits once, then a drain and latency per config.

    Each phase on a fresh database. `singles` single submits (default: `ops`, at most
    1,000). One `Run` per config; the submit figures are in each.
    """
    singles = min(ops, 1000) if singles is None else singles
    with ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logs = folder / backend
        logs.mkdir(parents=True, exist_ok=True)
        with database(backend, folder) as url:
            submits = submit_phase(url, ops, singles, logs / "submit")
        runs = []
        for config in configs:
            where = logs / f"drain-{config.workers}w-{config.api_processes}api"
            where.mkdir(parents=True, exist_ok=True)
            with database(backend, folder) as url:
                run = drain_phase(url, ops, rtt, config, where, pg_stats)
            run.backend = backend
            run.figures = {**submits.figures, **run.figures}
            run.costs = {**submits.costs, **run.costs}
            runs.append(run)
    return runs


def format_figures(runs: Sequence[Run]) -> str:
    """The figures table: one column per run, the target last."""
    names = [_name(r, runs) for r in runs]
    width = max(12, *(len(n) + 2 for n in names))
    lines = [
        f"{'figure':<16}{'unit':<7}" + "".join(f"{n:>{width}}" for n in names) + f"{'target':>10}"
    ]
    for key, unit in UNITS.items():
        row = "".join(f"{r.figures[key]:>{width}.1f}" for r in runs)
        lines.append(f"{key:<16}{unit:<7}{row}{TARGETS[key]:>10}")
    return "\n".join(lines)


def format_costs(
    runs: Sequence[Run], phases: Sequence[str] = ("bulk submit", "single submit", "drain")
) -> str:
    """Cost per operation: one column per run and phase."""
    columns: list[tuple[Run, str]] = []
    for run in runs:  # submits are measured once per backend: show them once
        shown = any(r.backend == run.backend for r, _ in columns)
        columns += [(run, p) for p in phases if p in run.costs and (p == "drain" or not shown)]
    heads = [f"{_name(r, runs)} {_short(p)}" for r, p in columns]
    width = max(12, *(len(h) + 2 for h in heads))
    lines = [f"{'cost per op':<18}{'unit':<5}" + "".join(f"{h:>{width}}" for h in heads)]
    for key, unit in COST_ROWS.items():
        if not any(key in r.costs[p] for r, p in columns):
            continue
        cells = "".join(
            f"{r.costs[p][key]:>{width}.{_digits(key)}f}"
            if key in r.costs[p]
            else f"{'-':>{width}}"
            for r, p in columns
        )
        lines.append(f"{key:<18}{unit:<5}{cells}")
    return "\n".join(lines)


def _digits(key: str) -> int:
    return 0 if key in ("server CPU", "worker CPU", "bytes in", "bytes out") else 2


def _short(phase: str) -> str:
    return {"bulk submit": "bulk", "single submit": "single", "drain": "drain"}[phase]


def _name(run: Run, runs: Sequence[Run]) -> str:
    if len({r.config for r in runs}) == 1:
        return run.backend
    return f"{run.backend} {run.config.workers}w/{run.config.api_processes}api"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--rtt", type=int, default=200, help="sequential round trips")
    parser.add_argument("--singles", type=int, default=None, help="single submits (default 1,000)")
    parser.add_argument("--workers", type=_ints, default=[2], help="worker processes: 1,2,4")
    parser.add_argument("--api-processes", type=_ints, default=[1], help="API servers: 1,2")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--pg-stats", action="store_true", help="pg_stat_database transactions")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run and print."""
    args = parse_args(argv)
    configs = [
        Config(workers=w, concurrency=args.concurrency, api_processes=a)
        for a in args.api_processes
        for w in args.workers
    ]
    runs: list[Run] = []
    for backend in args.backends.split(","):
        runs += run_oprun(
            backend, args.ops, args.rtt, args.singles, configs, pg_stats=args.pg_stats
        )
    print(f"oprun throughput, {args.ops} no-op operations, worker concurrency {args.concurrency}")
    print(format_figures(runs))
    print()
    print(format_costs(runs))


if __name__ == "__main__":
    main()
