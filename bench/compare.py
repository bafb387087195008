"""oprun next to five peer job queues, the same workload in one run, in one table.

    python -m bench.compare [--ops 10000] [--rtt 200] [--peers celery,huey] [--json FILE]

Runs oprun on SQLite and on PostgreSQL (`bench.throughput.run_oprun`) and
procrastinate, Celery, Dramatiq, Huey and RQ (`bench/peers/`): no-op jobs, 2 worker
processes, loopback. Figures, for everyone:
- drain: workers up and warm; jobs/s from the first enqueue of `--ops` until the
  system's own status or result mechanism says all are done
- bulk submit: jobs/s through the system's bulk API, no workers (n/a without one)
- single submit: jobs/s, one enqueue at a time, no workers (`--ops` of them)
- p50 / p99: ms from enqueue to result, `--rtt` sequential round trips
then oprun-PostgreSQL's ratio to each peer, and what each oprun operation costs.

The peers install into a venv of their own (pinned in bench/peers/requirements.txt),
made on first use under ``${XDG_CACHE_HOME:-~/.cache}/oprun-bench/peers-venv``
(``--venv`` to put it elsewhere). They need Redis on 127.0.0.1:6379 and PostgreSQL on
127.0.0.1:5432 (user postgres), as oprun's PostgreSQL run does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from bench.throughput import PG_ADMIN, Config, Run, format_costs, run_oprun

PEERS = ("procrastinate", "celery", "dramatiq", "huey", "rq")
HERE = Path(__file__).resolve().parent / "peers"
REQUIREMENTS = HERE / "requirements.txt"
REDIS = ("127.0.0.1", 6379)
COLUMNS = {
    "drain": "ops/s",
    "bulk submit": "ops/s",
    "single submit": "ops/s",
    "p50": "ms",
    "p99": "ms",
}
PEER_FIELDS = {
    "drain": "drain_per_s",
    "bulk submit": "enqueue_bulk_per_s",
    "single submit": "enqueue_per_s",
    "p50": "rtt_p50_ms",
    "p99": "rtt_p99_ms",
}
"""Each column's field in a peer script's JSON line."""
REFERENCE = "oprun-postgres"
PEER_TIMEOUT = 3 * 3600
"""Seconds one peer's script may run (RQ forks a process per job: slow on a busy machine)."""


def default_venv() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/oprun-bench/peers-venv``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "oprun-bench" / "peers-venv"


def ensure_venv(venv: Path) -> Path:
    """The peers' venv, made (or brought up to date with requirements.txt) when needed."""
    stamp = venv / "oprun-bench-requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    if not python.exists():
        print(f"making the peers' venv in {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"installing the peers into {venv} (bench/peers/requirements.txt) ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted + "\n")
    return python


def problems(need_redis: bool, need_postgres: bool) -> list[str]:
    """What the run needs and cannot reach, in words."""
    found = []
    if need_redis:
        try:
            with socket.create_connection(REDIS, timeout=3) as sock:
                sock.sendall(b"PING\r\n")
                if not sock.recv(64).startswith(b"+PONG"):
                    found.append(f"Redis at {REDIS[0]}:{REDIS[1]} did not answer PING")
        except OSError as exc:
            found.append(
                f"Redis is not reachable at {REDIS[0]}:{REDIS[1]} ({exc}); "
                "Celery, Dramatiq, Huey and RQ need it (start redis-server, or leave them out "
                "with --peers procrastinate)"
            )
    if need_postgres:
        try:
            with psycopg.connect(PG_ADMIN, connect_timeout=3):
                pass
        except psycopg.Error as exc:
            found.append(
                f"PostgreSQL is not reachable at {PG_ADMIN} ({str(exc).strip()}); "
                "oprun-postgres and procrastinate need it (or run --backends sqlite "
                "--peers celery,dramatiq,huey,rq)"
            )
    return found


def run_peer(python: Path, peer: str, ops: int, rtt: int, logs: Path) -> dict[str, Any]:
    """One peer's figures: its script's JSON line."""
    env = dict(os.environ, PEERS_VENV=str(python.parent.parent), PEERS_LOG_DIR=str(logs))
    env.pop("PEERS_RESULTS", None)
    done = subprocess.run(
        [str(python), str(HERE / f"bench_{peer}.py"), "--n", str(ops), "--rtt", str(rtt)],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=PEER_TIMEOUT,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{peer} failed ({done.returncode}); logs in {logs}\n{done.stderr[-2000:]}"
        )
    return dict(json.loads(lines[-1]))


def peer_row(record: dict[str, Any]) -> dict[str, float | None]:
    """A peer's table row from its JSON line."""
    return {column: record.get(field) for column, field in PEER_FIELDS.items()}


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """One row per system, one column per figure; n/a where a system has no such API."""
    heads = [f"{c} ({u})" for c, u in COLUMNS.items()]
    width = max(len(h) for h in heads) + 2
    out = [f"{'system':<16}" + "".join(f"{h:>{width}}" for h in heads)]
    for name, row in rows.items():
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            digits = 2 if COLUMNS[column] == "ms" else 0
            cells.append(f"{'n/a':>{width}}" if value is None else f"{value:>{width},.{digits}f}")
        out.append(f"{name:<16}" + "".join(cells))
    return "\n".join(out)


def format_ratios(rows: dict[str, dict[str, float | None]], reference: str = REFERENCE) -> str:
    """`reference`'s figure divided by each other system's (ops/s: > 1 is faster; ms: < 1)."""
    base = rows[reference]
    width = max(len(c) for c in COLUMNS) + 4
    out = [
        f"{reference} / peer: ops/s above 1 and ms below 1 mean {reference} is ahead",
        f"{'peer':<16}" + "".join(f"{c:>{width}}" for c in COLUMNS),
    ]
    for name, row in rows.items():
        if name == reference:
            continue
        cells = []
        for column in COLUMNS:
            mine, theirs = base.get(column), row.get(column)
            ok = mine is not None and theirs  # n/a, or a zero to divide by
            cells.append(f"{mine / theirs:>{width - 1}.2f}x" if ok else f"{'n/a':>{width}}")  # type: ignore[operator]
        out.append(f"{name:<16}" + "".join(cells))
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="jobs per figure")
    parser.add_argument("--rtt", type=int, default=200, help="sequential round trips")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated; '' for none")
    parser.add_argument("--backends", default="sqlite,postgres", help="oprun's; '' for none")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--venv", type=Path, default=None, help="the peers' venv")
    parser.add_argument("--concurrency", type=int, default=8, help="slots per oprun worker")
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    if set(args.backends) - {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and postgres")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything and print the table."""
    args = parse_args(argv)
    found = problems(
        need_redis=bool(set(args.peers) - {"procrastinate"}),
        need_postgres="postgres" in args.backends or "procrastinate" in args.peers,
    )
    if found:
        print("bench.compare cannot run:\n- " + "\n- ".join(found), file=sys.stderr)
        return 2
    python = ensure_venv(args.venv or default_venv()) if args.peers else None
    rows: dict[str, dict[str, float | None]] = {}
    records: dict[str, Any] = {}
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="oprun-compare-") as tmp:
        for backend in args.backends:
            print(f"== oprun on {backend}", flush=True)
            config = Config(workers=2, concurrency=args.concurrency)
            run = run_oprun(backend, args.ops, args.rtt, args.ops, [config], Path(tmp))[0]
            runs.append(run)
            rows[f"oprun-{backend}"] = {c: run.figures.get(c) for c in COLUMNS}
            records[f"oprun-{backend}"] = asdict(run)
            print(f"   {json.dumps(rows[f'oprun-{backend}'])}", flush=True)
        for peer in args.peers:
            print(f"== {peer}", flush=True)
            assert python is not None
            try:
                record = run_peer(python, peer, args.ops, args.rtt, Path(tmp) / "peers")
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                # One peer failing (or too slow for this machine) must not lose the others.
                print(f"   {peer} failed: {str(exc).strip().splitlines()[-1]}", flush=True)
                records[peer] = {"error": str(exc)}
                rows[f"{peer} (failed)"] = dict.fromkeys(COLUMNS)
                continue
            rows[peer] = peer_row(record)
            records[peer] = record
            print(f"   {json.dumps(rows[peer])}", flush=True)
    print()
    print(f"{args.ops} no-op jobs, 2 worker processes, {args.rtt} round trips, loopback")
    print(format_table(rows))
    if REFERENCE in rows and len(rows) > 1:
        print()
        print(format_ratios(rows))
    if runs:
        print()
        print(format_costs(runs))
    if args.json:
        args.json.write_text(
            json.dumps({"ops": args.ops, "rtt": args.rtt, "systems": records}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
