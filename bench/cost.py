"""What an oprun run costs: CPU of its processes, database calls, HTTP bytes.

A `Snapshot` reads, at one instant, the CPU time of the server and worker
processes (``/proc/<pid>/stat``: user + system time of each process and of its
children, live ones and those already reaped) and each server's counters from its
``/metrics`` (statements and round trips to the database, HTTP bytes in and out).
The difference of two snapshots divided by the operations in between is the cost
per operation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

COUNTERS = {
    "oprun_database_statements": "statements",
    "oprun_database_round_trips": "round trips",
    "oprun_http_request_bytes": "bytes in",
    "oprun_http_response_bytes": "bytes out",
}
"""The server's counters a snapshot reads, by the name of their figure."""
COST_ROWS = {
    "server CPU": "µs",
    "worker CPU": "µs",
    "statements": "",
    "round trips": "",
    "PG transactions": "",
    "bytes in": "B",
    "bytes out": "B",
}
"""Cost figures per operation, in the order printed, with their units."""
_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants, the reaped ones included."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue  # exited between the listing and the read
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14-17
        total += sum(int(x) for x in fields[11:15])
        stack += _children(current)
    return total / _TICKS


def server_counters(url: str, token: str) -> dict[str, float]:
    """The cost counters of the server at `url` (one scrape of its /metrics)."""
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    found = dict.fromkeys(COUNTERS.values(), 0.0)
    for family in text_string_to_metric_families(response.text):
        if family.name in COUNTERS:
            found[COUNTERS[family.name]] = sum(
                s.value for s in family.samples if s.name.endswith("_total")
            )
    return found


def pg_transactions(url: str, settle: float = 11.0) -> float:
    """Transactions committed or rolled back in `url`'s database, per pg_stat_database.

    PostgreSQL 15 publishes a connection's counts when it goes idle, at most every
    10 s: this waits `settle` seconds first. Read from the admin database, so the
    reading is not counted.
    """
    time.sleep(settle)
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    return float(row[0]) if row else 0.0


@dataclass
class Snapshot:
    """CPU and counters at one instant."""

    server_cpu: float
    worker_cpu: float
    counters: dict[str, float]
    pg_transactions: float | None = None

    @classmethod
    def take(
        cls,
        servers: Sequence[tuple[str, str, int]],
        workers: Iterable[int] = (),
        pg_url: str | None = None,
    ) -> Snapshot:
        """Read `servers` ((url, token, pid) each), `workers` (pids), `pg_url`'s counts."""
        xacts = pg_transactions(pg_url) if pg_url else None
        counters = dict.fromkeys(COUNTERS.values(), 0.0)
        for url, token, _ in servers:
            for name, value in server_counters(url, token).items():
                counters[name] += value
        return cls(
            server_cpu=sum(cpu_seconds(pid) for _, _, pid in servers),
            worker_cpu=sum(cpu_seconds(pid) for pid in workers),
            counters=counters,
            pg_transactions=xacts,
        )


@dataclass
class Cost:
    """Cost per operation between two snapshots."""

    per_op: dict[str, float] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot, ops: int) -> Cost:
        """The cost of each of `ops` operations done between `before` and `after`."""
        per_op = {
            "server CPU": (after.server_cpu - before.server_cpu) * 1e6 / ops,
            "worker CPU": (after.worker_cpu - before.worker_cpu) * 1e6 / ops,
        }
        for name in COUNTERS.values():
            per_op[name] = (after.counters[name] - before.counters[name]) / ops
        if before.pg_transactions is not None and after.pg_transactions is not None:
            per_op["PG transactions"] = (after.pg_transactions - before.pg_transactions) / ops
        return cls(per_op)
