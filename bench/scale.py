"""What each periodic job, claim and page costs on an empty database and on a loaded one.

    python -m bench.scale [--ops 1000000] [--backends postgres,sqlite] [--backlog 10000]

For each backend, in one run, two fresh databases, each with a real `oprun server`
(its own reaper and purge held back, so that they do not run beside the figures):

- loaded: `--ops` finished operations, each with its task, session, attempt, status
  history, events and logs, loaded set-based (`bench.scale_load`, which says how);
  then a live backlog made through the store as clients and workers make it
  (`--backlog` waiting operations over three queues, with timeouts, 200 of them
  running under a lease, 50 waiting out a retry backoff). On PostgreSQL the tables
  are then vacuumed and analyzed, as autovacuum would have done.
- empty: the same actions and queues, a page of finished operations for each filter,
  and the same live backlog (so that the ratios weigh the finished history alone).

Every figure is then timed on both, one call here, one call there, so that whatever
else the machine does weighs on both alike; printed is the p50 of `--samples` calls
in milliseconds. The reaper's steps and the retention round are the service's own
functions, run in this process over its own store as an API process runs them;
claims and pages go over HTTP to the servers. Printed: one table (figure, empty,
loaded, ratio; the target is a ratio of at most 1.10), then the storage each table
takes per operation on the loaded database.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import func, select, text, update

from bench import scale_load
from oprun.domain.models import ActionDefinition, InvocationSource
from oprun.domain.protocol import Report
from oprun.domain.roles import Role
from oprun.service.auth import hash_secret
from oprun.service.operations import params_digest
from oprun.service.reaper import reap_round, silence_rule
from oprun.service.retention import purge_round
from oprun.service.settings import Settings
from oprun.store import NewOperation, Store, open_store
from oprun.store import schema as t
from oprun.testing import Server

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET = 1.10
WARMUP = 3
EMPTY_HISTORY = 200
"""Finished operations in the empty database: each matches every filtered page, so its
first pages are as full as the loaded database's."""
LEASE = 600.0
"""The server's lease: no attempt the bench holds lapses while it measures."""


# -- databases ------------------------------------------------------------------------------
@contextmanager
def fresh_database(backend: str, folder: Path, label: str, keep: bool) -> Iterator[str]:
    """A new empty database's URL; dropped afterwards unless `keep`."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / label}.db"
        return
    name = f"oprun_scale_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        if keep:
            print(f"  kept database {name}")
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server(url: str, logs: Path, token: str | None = None) -> Server:
    """A real server whose own reaper and purge wait an hour between rounds."""
    return Server(
        database_url=url,
        token=token or f"oprun_bench_{uuid.uuid4().hex}",
        lease_seconds=LEASE,
        reap_interval=3600,
        log_path=logs / "server.log",
        environment={"OPRUN_RETENTION_INTERVAL": "3600"},
    ).start()


# -- the project and its live work ------------------------------------------------------
def prepare(store: Store, project_id: str) -> scale_load.Project:
    """The actions and queues the loaded operations point to, made by oprun itself."""
    actions = {}
    for name, _ in scale_load.ACTIONS:
        action, _ = store.save_action(
            project_id,
            ActionDefinition(name=name, entrypoint="oprun.examples:noop", max_attempts=3),
        )
        actions[name] = (action.id, action.version_id, action.digest)
    queues = {}
    for name, _ in scale_load.QUEUES:
        queues[name] = store.configure_queue(project_id, name, 0, None).id
    return scale_load.Project(project_id, queues, actions)


def add_live(
    store: Any, project: scale_load.Project, per_queue: int, running: int, delayed: int
) -> None:
    """Waiting operations on every queue (with timeouts), some running, some in backoff.

    Made through the store as invocations and a worker's claims and reports make them;
    a retry's backoff is set directly (`available_at` in ten minutes).
    """
    versions = {name: store.get_action(project.id, name) for name, _ in scale_load.ACTIONS}
    names = [name for name, _ in scale_load.ACTIONS[:5]]
    creators = [name for name, _ in scale_load.CREATORS[:5]]
    for queue in project.queues:
        for start in range(0, per_queue, 500):
            store.create_operations(
                [
                    NewOperation(
                        project_id=project.id,
                        action=versions[names[n % len(names)]],
                        queue=queue,
                        parameters={"n": n},
                        params_digest=params_digest({"n": uuid.uuid4().hex}),
                        created_by=creators[n % len(creators)],
                        source_type=InvocationSource.MANUAL,
                        source_id="bench",
                        idempotency_key=None,
                        timeout=3600.0,
                    )
                    for n in range(start, min(per_queue, start + 500))
                ]
            )
    if running:
        worker = store.register_worker(project.id, "live", "bench", ["batch"], {})
        got = store.claim(worker.id, project.id, ["batch"], running, LEASE)
        store.apply_reports(
            worker.id,
            [
                Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=k)
                for a in got
                for k in ("running",)
            ],
        )
    if delayed:
        tasks = t.tasks.c
        with store.engine.begin() as conn:
            ids = (
                conn.execute(
                    select(tasks.id)
                    .where(tasks.status == "QUEUED", tasks.queue_id == project.queues["batch"])
                    .order_by(tasks.id.desc())
                    .limit(delayed)
                )
                .scalars()
                .all()
            )
            conn.execute(
                update(t.tasks).where(tasks.id.in_(ids)).values(available_at=time.time() + 600)
            )


# -- figures ----------------------------------------------------------------------------
Figure = Callable[[], Any]


def figures(
    url: str,
    server: Server,
    store: Any,
    project: scale_load.Project,
    ops: int,
    stack: ExitStack,
) -> dict[str, Figure]:
    """Each figure of one database, as a call to time."""
    settings = Settings(database_url=url, lease_seconds=LEASE)
    rule = silence_rule(settings)
    found: dict[str, Figure] = {}

    def due_since() -> float:
        return float(store.now()) - settings.reap_interval

    found["reaper: lapsed leases"] = lambda: store.reap(settings.worker_silence, silence=rule)
    found["reaper: timeouts"] = store.time_out_operations
    found["reaper: due retries"] = lambda: store.wake_for_due_retries(due_since())
    found["reaper: whole round"] = lambda: asyncio.run(
        reap_round(store, settings, rule, due_since())
    )
    by_age = Settings(database_url=url, retention_days=3650)
    by_count = Settings(database_url=url, retention_max_operations=max(ops, 1))
    found["retention round (by age)"] = lambda: asyncio.run(purge_round(store, by_age))
    found["retention round (by count)"] = lambda: asyncio.run(purge_round(store, by_count))
    api = stack.enter_context(
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
        )
    )
    for label, queues in (("claim: one queue", ["default"]), ("claim: three queues", None)):
        body = {"name": "bench", "hostname": "bench", "queues": queues or list(project.queues)}
        registered = api.post("/v1/workers", json=body)
        registered.raise_for_status()
        path = f"/v1/workers/{registered.json()['id']}:claim"

        def claim(path: str = path) -> None:
            got = api.post(path, json={"max": 1})
            got.raise_for_status()
            assert got.json()["assignments"], "no waiting task left to claim"

        found[label] = claim
    rare_action, rare_creator = scale_load.RARE_ACTION, scale_load.RARE_CREATOR
    pages: dict[str, dict[str, str]] = {
        "page: operations": {},
        "page: status=FAILED": {"status": "FAILED"},
        "page: action (0.1 %)": {"action": rare_action},
        "page: status+action": {"status": "FAILED", "action": rare_action},
        "page: created_by (0.1 %)": {"created_by": rare_creator},
    }
    for label, params in pages.items():

        def page(params: dict[str, str] = params) -> None:
            api.get("/v1/operations", params=params).raise_for_status()

        found[label] = page
    with store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(t.operations)).scalar_one()
        one = conn.execute(
            select(t.operations.c.id).order_by(t.operations.c.id).offset(count // 2).limit(1)
        ).scalar_one()
    found["get operation"] = lambda: api.get(f"/v1/operations/{one}").raise_for_status()
    found["page: queues (stats)"] = lambda: api.get("/v1/queues").raise_for_status()
    found["metrics scrape"] = lambda: api.get("/metrics").raise_for_status()
    return found


SLOW = {"retention round (by age)", "retention round (by count)"}
"""Figures timed fewer times (a purge round over every project is the slowest)."""


def side_by_side(
    empty: dict[str, Figure], loaded: dict[str, Figure], samples: int
) -> dict[str, tuple[float, float]]:
    """p50 ms of each figure on both databases, their calls alternating.

    Alternating one call here, one there, gives both sides the same machine: a load
    that comes and goes (other processes) weighs on both alike.
    """
    results = {}
    for name, run_empty in empty.items():
        run_loaded = loaded[name]
        times: tuple[list[float], list[float]] = ([], [])
        count = max(5, samples // 4) if name in SLOW else samples
        for n in range(WARMUP + count):
            for side, run in enumerate((run_empty, run_loaded)):
                started = time.perf_counter()
                run()
                if n >= WARMUP:
                    times[side].append((time.perf_counter() - started) * 1000)
        results[name] = (statistics.median(times[0]), statistics.median(times[1]))
    return results


# -- storage ----------------------------------------------------------------------------
def storage(url: str, store: Any) -> tuple[int, dict[str, int]]:
    """Operations held, and bytes per table (with its indexes)."""
    with store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(t.operations)).scalar_one()
        if url.startswith("sqlite"):
            owner = {
                name: table
                for name, table in conn.execute(
                    text("SELECT name, tbl_name FROM sqlite_master WHERE tbl_name <> ''")
                )
            }
            sizes: dict[str, int] = {}
            for name, size in conn.execute(
                text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
            ):
                table = owner.get(name, name)
                sizes[table] = sizes.get(table, 0) + int(size)
        else:
            sizes = {
                name: int(size)
                for name, size in conn.execute(
                    text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'public' AND c.relkind = 'r'"
                    )
                )
            }
    return int(count), sizes


def index_sizes(url: str, store: Any, table: str) -> dict[str, int]:
    """Bytes of the table itself and of each of its indexes."""
    with store.engine.connect() as conn:
        if url.startswith("sqlite"):
            query = text(
                "SELECT d.name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m "
                "ON m.name = d.name WHERE m.tbl_name = :t GROUP BY d.name"
            )
        else:
            query = text(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "WHERE c.oid = CAST(:t AS regclass) OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = CAST(:t AS regclass))"
            )
        return {name: int(size) for name, size in conn.execute(query, {"t": table})}


def vacuum(url: str) -> float:
    """VACUUM (ANALYZE) a PostgreSQL database, as autovacuum would; the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.monotonic() - started


# -- one backend ------------------------------------------------------------------------
def load(
    url: str,
    folder: Path,
    ops: int,
    days: float,
    spread: scale_load.Spread,
    live: Callable[[Any, scale_load.Project], None],
) -> tuple[str, scale_load.Project]:
    """Fill a database: finished operations, then live work; the token of its server."""
    server = start_server(url, folder)
    store: Any = open_store(url, migrate=False)
    try:
        project = prepare(store, store.first_project().id)
        server.stop()
        print(f"  loading {ops:,} finished operations")
        conn, dialect = scale_load.connect(url)
        try:
            loader = scale_load.Loader(
                conn, dialect, project, days=days, last_hour=0.1, spread=spread
            )
            took = loader.load(ops, lambda line: print(f"    {line}", flush=True))
        finally:
            conn.close()
        print(f"    loaded in {took:.1f} s ({ops / max(took, 1e-9):,.0f} operations/s)")
        started = time.monotonic()
        live(store, project)
        print(f"    live work made in {time.monotonic() - started:.1f} s")
        if not url.startswith("sqlite"):
            print(f"    VACUUM (ANALYZE) took {vacuum(url):.1f} s")
    finally:
        server.stop()
        store.close()
    return server.token, project


def run_backend(
    backend: str, folder: Path, ops: int, backlog: int, samples: int, days: float, keep: bool
) -> Result:
    """Figures (empty, loaded), the loaded database's storage, and its history's parts."""
    with (
        fresh_database(backend, folder, "loaded", keep) as loaded_url,
        fresh_database(backend, folder, "empty", keep) as empty_url,
    ):
        # Both sides hold the same live work, so that the ratios weigh the finished
        # history alone: what counts unfinished work (the scrape, the Queues page) costs
        # what is in flight by design, and a backlog on one side only measured that.
        per_queue = max(backlog // 3, 2 * (WARMUP + samples) + 10)

        def live(store: Any, project: scale_load.Project) -> None:
            add_live(store, project, per_queue=per_queue, running=200, delayed=50)

        print(f"{backend}: the loaded database")
        loaded = load(loaded_url, folder, ops, days, scale_load.Spread(), live)
        print(f"{backend}: the empty database (a page of finished operations for each filter)")
        empty = load(empty_url, folder, EMPTY_HISTORY, 1.0, scale_load.MATCHING, live)
        return measure(empty_url, loaded_url, folder, ops, samples, (empty, loaded))


Result = tuple[dict[str, tuple[float, float]], tuple[int, dict[str, int]], dict[str, int]]


def measure(
    empty_url: str,
    loaded_url: str,
    folder: Path,
    ops: int,
    samples: int,
    made: tuple[tuple[str, scale_load.Project], ...] | None = None,
) -> Result:
    """Time every figure on both databases; storage and history parts of the loaded one.

    Without `made` (databases kept from an earlier run), each gets a new admin token
    and as many more waiting tasks as this run's claims take.
    """
    with ExitStack() as stack:
        sides = []
        for n, url in enumerate((empty_url, loaded_url)):
            store: Any = open_store(url, migrate=False)
            stack.callback(store.close)
            if made is None:
                token = f"oprun_bench_{uuid.uuid4().hex}"
                project = prepare(store, store.first_project().id)
                store.create_token(project.id, "bench", Role.ADMIN, hash_secret(token))
                # The same on both sides: this run's claims take as many on each.
                add_live(store, project, 2 * (WARMUP + samples) + 10, running=0, delayed=0)
            else:
                token, project = made[n]
            server = start_server(url, folder, token)
            stack.callback(server.stop)
            sides.append((url, server, store, project))
        print("measuring, empty and loaded side by side")
        measured = side_by_side(
            figures(*sides[0], ops, stack), figures(*sides[1], ops, stack), samples
        )
        _, _, store, _ = sides[1]
        return (
            measured,
            storage(loaded_url, store),
            index_sizes(loaded_url, store, "status_history"),
        )


def report(
    backend: str,
    ops: int,
    measured: dict[str, tuple[float, float]],
    sizes: tuple[int, dict[str, int]],
    history: dict[str, int],
) -> None:
    """Print the backend's figures and storage."""
    print(f"\n{backend}: p50 ms, empty database vs {ops:,} finished operations")
    print(f"{'figure':<30}{'empty':>10}{'loaded':>10}{'ratio':>8}  (target <= {TARGET:.2f})")
    for name, (before, after) in measured.items():
        ratio = after / before if before else float("inf")
        flag = "" if ratio <= TARGET else "  over"
        print(f"{name:<30}{before:>10.2f}{after:>10.2f}{ratio:>8.2f}{flag}")
    count, tables = sizes
    total = sum(tables.values())
    print(f"\n{backend}: storage of {count:,} operations, {total / 2**20:,.0f} MiB")
    print(f"{'table (with its indexes)':<30}{'MiB':>10}{'bytes/op':>10}")
    for name, size in sorted(tables.items(), key=lambda kv: -kv[1]):
        if size >= 2**20:
            print(f"{name:<30}{size / 2**20:>10,.1f}{size / count:>10,.0f}")
    print(f"{'total':<30}{total / 2**20:>10,.1f}{total / count:>10,.0f}")
    print("status_history, by part:")
    for name, size in sorted(history.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28}{size / 2**20:>10,.1f}{size / count:>10,.0f}")


def main() -> None:
    """Run every backend asked for and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    parser.add_argument(
        "--reuse",
        metavar="EMPTY_URL,LOADED_URL",
        help="measure two databases kept by --keep again, without making or loading any",
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.reuse:
            empty_url, loaded_url = args.reuse.split(",")
            results.append(
                ("reused", measure(empty_url, loaded_url, Path(tmp), args.ops, args.samples))
            )
        for backend in [] if args.reuse else args.backends.split(","):
            folder = Path(tmp) / backend
            folder.mkdir()
            results.append(
                (
                    backend,
                    run_backend(
                        backend,
                        folder,
                        args.ops,
                        args.backlog,
                        args.samples,
                        args.days,
                        args.keep,
                    ),
                )
            )
    for backend, (measured, sizes, history) in results:
        report(backend, args.ops, measured, sizes, history)


if __name__ == "__main__":
    main()
