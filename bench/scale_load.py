"""Bulk-load finished operations into an oprun database, set-based, for `bench.scale`.

Each finished operation gets the rows oprun's own code writes for one run of a
one-task action (checked against a real run): the operation, its task, a session,
the attempt (session action), ten status history rows (eleven when it failed, four
when it was canceled before it ran), its events and two log lines. Rows are made by
`INSERT ... SELECT` over a series of integers (`generate_series` on PostgreSQL, a
recursive CTE on SQLite), `CHUNK` operations per transaction, never row by row.

The spread is fixed and reproducible (a multiplicative hash of the row number, no
random()): three queues (70/20/10 %), twenty actions and forty creators on a Zipf
curve, each with one rare member (0.1 %) for the filters to find; 90 % SUCCEEDED,
7 % FAILED, 3 % CANCELED; 30 % with a timeout (so a past `deadline_at`); 10 % with
an idempotency key. Creation times rise with the row number over `days`, except
the last `last_hour` share, which ended within the last hour (the Queues page's
throughput counts those). Ids have the shape of `oprun.domain.ids` (prefix, then a
millisecond timestamp first), so they sort by creation as real ones do.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

CHUNK = 50_000
"""Operations per load transaction."""
QUEUES = (("default", 0.70), ("gpu", 0.20), ("batch", 0.10))
RARE = 0.001
"""Share of the rare action and the rare creator: what the filters look for."""
RARE_ACTION = "audit-export"
RARE_CREATOR = "auditor@example.com"
STATUSES = (("SUCCEEDED", 0.90), ("FAILED", 0.07), ("CANCELED", 0.03))
LOADED = (
    "operations",
    "tasks",
    "sessions",
    "session_actions",
    "status_history",
    "events",
    "logs",
)
"""The tables the load fills."""
WORKERS = 200
"""Worker rows the history was run by (agents restart: one row per start)."""


def _zipf(names: Sequence[str], rare: str) -> list[tuple[str, float]]:
    weights = [1 / (k + 1) for k in range(len(names))]
    total = sum(weights) / (1 - RARE)
    return [(n, w / total) for n, w in zip(names, weights, strict=True)] + [(rare, RARE)]


ACTIONS = _zipf([f"job-{k:02d}" for k in range(19)], RARE_ACTION)
CREATORS = _zipf([f"user{k:02d}@example.com" for k in range(39)], RARE_CREATOR)


@dataclass(frozen=True)
class Spread:
    """How loaded operations spread over queues, actions, creators and final statuses."""

    queues: Sequence[tuple[str, float]] = QUEUES
    actions: Sequence[tuple[str, float]] = tuple(ACTIONS)
    creators: Sequence[tuple[str, float]] = tuple(CREATORS)
    statuses: Sequence[tuple[str, float]] = STATUSES


MATCHING = Spread(
    actions=((RARE_ACTION, 1.0),), creators=((RARE_CREATOR, 1.0),), statuses=(("FAILED", 1.0),)
)
"""Every operation matches every filter the benchmark pages by: a few of these give the
empty database a full first page for each, so that both sides answer pages alike."""

# One operation's status history, by its final status: (entity, status, detail, time).
HISTORY = {
    "SUCCEEDED": [
        ("op", "QUEUED", "created", "c"),
        ("task", "SCHEDULED", "claimed", "claim"),
        ("sa", "ASSIGNED", "assigned", "claim"),
        ("op", "SCHEDULED", None, "claim"),
        ("sa", "RUNNING", "started", "start"),
        ("task", "RUNNING", "started", "start"),
        ("sa", "SUCCEEDED", None, "end"),
        ("task", "SUCCEEDED", None, "end"),
        ("op", "RUNNING", None, "end"),
        ("op", "SUCCEEDED", None, "end"),
    ],
    "FAILED": [
        ("op", "QUEUED", "created", "c"),
        ("task", "SCHEDULED", "claimed", "claim"),
        ("sa", "ASSIGNED", "assigned", "claim"),
        ("op", "SCHEDULED", None, "claim"),
        ("sa", "RUNNING", "started", "start"),
        ("task", "RUNNING", "started", "start"),
        ("sa", "FAILED", "boom", "end"),
        ("task", "FAILED", "boom", "end"),
        ("op", "RUNNING", None, "end"),
        ("op", "FAILED", None, "end"),
    ],
    "CANCELED": [
        ("op", "QUEUED", "created", "c"),
        ("op", "CANCELING", "canceled", "end"),
        ("task", "CANCELED", "canceled", "end"),
        ("op", "CANCELED", None, "end"),
    ],
}
EVENTS = {
    "SUCCEEDED": [
        ("operation.created", '{"status": "QUEUED"}', "c"),
        ("operation.status", '{"status": "SCHEDULED"}', "claim"),
        ("operation.progress", '{"progress_percent": 50.0, "progress_message": "half way"}', "end"),
        ("operation.status", '{"status": "SUCCEEDED"}', "end"),
    ],
    "FAILED": [
        ("operation.created", '{"status": "QUEUED"}', "c"),
        ("operation.status", '{"status": "SCHEDULED"}', "claim"),
        ("operation.status", '{"status": "FAILED"}', "end"),
    ],
    "CANCELED": [
        ("operation.created", '{"status": "QUEUED"}', "c"),
        ("operation.status", '{"status": "CANCELING"}', "end"),
        ("operation.status", '{"status": "CANCELED"}', "end"),
    ],
}
PARAMS = """'{"n": ' || g.i || ', "region": "eu-west-1"}'"""
TASK_PARAMS = """'{"n": ' || g.i || '}'"""
NULL = "'null'"
EMPTY = "'{}'"
WORKER_QUEUES = """'["default", "gpu", "batch"]'"""
RESULT = """CASE WHEN g.st = 'SUCCEEDED' THEN '{"ok": true}' ELSE 'null' END"""
"""JSON null, as oprun writes an empty JSON column."""
POLICY = (
    '{"retry": {"retry_on": ["CRASHED"], "backoff_seconds": 1.0, '
    '"backoff_max_seconds": 300.0}, "quarantine_after": 3}'
)


@dataclass(frozen=True)
class Project:
    """What the loaded rows point to: made by oprun itself before the load."""

    id: str
    queues: dict[str, str]
    """Queue name -> id."""
    actions: dict[str, tuple[str, str, str]]
    """Action name -> (action id, version id, digest)."""


class Dialect:
    """The SQL that differs between the backends."""

    name = ""

    def series(self, lo: int, hi: int) -> str:
        """A FROM item of one column `i`, lo .. hi - 1."""
        raise NotImplementedError

    def hexid(self, prefix: str, seconds: str, mult: int) -> str:
        """An id like `new_id`: prefix, 12 hex digits of milliseconds, '7', hash, '8', i."""
        raise NotImplementedError

    def json(self, expr: str) -> str:
        """`expr` (text) as the backend's JSON column type."""
        return expr

    def digest(self, i: str) -> str:
        """64 hex digits that differ per integer `i`."""
        raise NotImplementedError


class Postgres(Dialect):
    name = "postgresql"

    def series(self, lo: int, hi: int) -> str:
        return f"generate_series({lo}::bigint, {hi - 1}::bigint) AS s(i)"

    def hexid(self, prefix: str, seconds: str, mult: int) -> str:
        ms = f"CAST(floor(({seconds}) * 1000) AS bigint)"
        return (
            f"'{prefix}_' || lpad(to_hex({ms}), 12, '0') || '7' || "
            f"lpad(to_hex((i * {mult}) % 4096), 3, '0') || '8' || lpad(to_hex(i), 15, '0')"
        )

    def json(self, expr: str) -> str:
        return f"CAST({expr} AS jsonb)"

    def digest(self, i: str) -> str:
        return f"md5({i}::text) || md5(({i} + 7)::text)"


class Sqlite(Dialect):
    name = "sqlite"

    def series(self, lo: int, hi: int) -> str:
        return (
            f"(WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s "
            f"WHERE i < {hi - 1}) SELECT i FROM s)"
        )

    def hexid(self, prefix: str, seconds: str, mult: int) -> str:
        ms = f"CAST(({seconds}) * 1000 AS INTEGER)"
        return f"'{prefix}_' || printf('%012x7%03x8%015x', {ms}, (i * {mult}) % 4096, i)"

    def digest(self, i: str) -> str:
        return (
            f"printf('%016x%016x%016x%016x', {i} * 2654435761, {i} * 40503, "
            f"{i} * 2246822519, {i} * 3266489917)"
        )


def _uniform(mult: int, prime: int) -> str:
    """A value in [0, 1) spread evenly over `i` (a multiplicative hash)."""
    return f"(CAST((i * {mult}) % {prime} AS double precision) / {prime})"


def _pick(u: str, choices: Sequence[tuple[str, float]]) -> str:
    """SQL choosing a name by weight from uniform `u`."""
    if len(choices) == 1:
        return f"'{choices[0][0]}'"
    whens, edge = [], 0.0
    for name, weight in choices[:-1]:
        edge += weight
        whens.append(f"WHEN {u} < {edge:.6f} THEN '{name}'")
    return f"CASE {' '.join(whens)} ELSE '{choices[-1][0]}' END"


def _literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


class Loader:
    """Loads finished operations over one DB-API connection (psycopg or sqlite3)."""

    def __init__(
        self,
        conn: Any,
        dialect: Dialect,
        project: Project,
        *,
        days: float,
        last_hour: float,
        spread: Spread = Spread(),
    ) -> None:
        self.spread = spread
        self.conn = conn
        self.d = dialect
        self.project = project
        self.days = days
        self.last_hour = last_hour

    def _run(self, sql: str) -> None:
        self.conn.execute(sql)

    def _tables(self) -> None:
        """Small lookup tables the load joins: actions, queues, workers, history, events."""
        d, run = self.d, self._run
        for name in ("bench_actions", "bench_queues", "bench_history", "bench_events"):
            run(f"DROP TABLE IF EXISTS {name}")
        run("CREATE TEMP TABLE bench_actions (name text, id text, version_id text, digest text)")
        for name, (aid, vid, digest) in self.project.actions.items():
            run(f"INSERT INTO bench_actions VALUES ('{name}', '{aid}', '{vid}', '{digest}')")
        run("CREATE TEMP TABLE bench_queues (name text, id text)")
        for name, qid in self.project.queues.items():
            run(f"INSERT INTO bench_queues VALUES ('{name}', '{qid}')")
        run(
            "CREATE TEMP TABLE bench_history "
            "(st text, ord integer, entity text, status text, detail text, tk text)"
        )
        for st, steps in HISTORY.items():
            for n, (entity, status, detail, when) in enumerate(steps):
                run(
                    f"INSERT INTO bench_history VALUES ('{st}', {n}, '{entity}', '{status}', "
                    f"{_literal(detail)}, '{when}')"
                )
        run("CREATE TEMP TABLE bench_events (st text, ord integer, type text, data text, tk text)")
        for st, events in EVENTS.items():
            for n, (kind, data, when) in enumerate(events):
                run(
                    f"INSERT INTO bench_events VALUES ('{st}', {n}, '{kind}', "
                    f"{_literal(data)}, '{when}')"
                )
        now = time.time()
        wid = d.hexid("wk", f"{now - self.days * 86400} + i * 3600", 3)
        run(
            "INSERT INTO workers (id, project_id, name, hostname, status, queues, capabilities, "
            "last_heartbeat_at, created_at) "
            f"SELECT {wid}, '{self.project.id}', 'agent-' || (i % 20), 'host-' || (i % 20), "
            f"'STOPPED', {d.json(WORKER_QUEUES)}, {d.json(EMPTY)}, "
            f"{now - self.days * 86400} + i * 3600, {now - self.days * 86400} + i * 3600 "
            f"FROM {d.series(0, WORKERS)}"
        )
        # The workers just made, by position, for the attempts to name.
        run("DROP TABLE IF EXISTS bench_workers")
        run(
            "CREATE TEMP TABLE bench_workers AS SELECT id, "
            "ROW_NUMBER() OVER (ORDER BY id) - 1 AS n FROM workers "
            f"WHERE project_id = '{self.project.id}' AND name LIKE 'agent-%'"
        )
        for table, column in (
            ("bench_workers", "n"),
            ("bench_actions", "name"),
            ("bench_queues", "name"),
            ("bench_history", "st"),
            ("bench_events", "st"),
        ):
            run(f"CREATE INDEX {table}_{column} ON {table} ({column})")

    def _gen(self, lo: int, hi: int, total: int, now: float) -> None:
        """The chunk's operations, one row each, with every value the inserts need."""
        d = self.d
        recent = int(total * self.last_hour)
        old = total - recent
        start = now - self.days * 86400
        step_old = (self.days * 86400 - 3600) / max(old, 1)
        step_new = (3600 - 330) / max(recent, 1)
        created = (
            f"(CASE WHEN i < {old} THEN CAST({start} AS double precision) + i * {step_old} "
            f"ELSE CAST({now - 3600 + 30} AS double precision) + (i - {old}) * {step_new} END)"
        )
        base = (
            f"SELECT i, {created} AS created_at, "
            f"0.05 + 5 * {_uniform(2654435761, 1000003)} AS wait, "
            f"0.5 + 120 * {_uniform(40503, 999983)} AS duration, "
            f"{_pick(_uniform(2246822519, 999979), self.spread.queues)} AS queue, "
            f"{_pick(_uniform(3266489917, 999961), self.spread.actions)} AS action, "
            f"{_pick(_uniform(668265263, 999959), self.spread.creators)} AS created_by, "
            f"{_pick(_uniform(374761393, 999953), self.spread.statuses)} AS st, "
            f"{_uniform(2147483647, 999931)} < 0.3 AS has_timeout, "
            f"{_uniform(1103515245, 999917)} < 0.1 AS has_key, "
            f"i % {WORKERS} AS wn "
            f"FROM {d.series(lo, hi)}"
        )
        self._run("DROP TABLE IF EXISTS bench_gen")
        self._run(
            "CREATE TEMP TABLE bench_gen AS SELECT b.*, "
            "b.created_at + b.wait AS claimed_at, "
            "b.created_at + b.wait + 0.05 AS started_at, "
            "b.created_at + b.wait + 0.05 + b.duration AS ended_at, "
            f"{d.hexid('op', 'b.created_at', 7)} AS op_id, "
            f"{d.hexid('task', 'b.created_at', 11)} AS task_id, "
            f"{d.hexid('sess', 'b.created_at + b.wait', 13)} AS sess_id, "
            f"{d.hexid('sa', 'b.created_at + b.wait', 17)} AS sa_id "
            f"FROM ({base}) b"
        )
        if self.d.name == "postgresql":
            self._run("ANALYZE bench_gen")

    def _insert(self) -> None:
        """The chunk's rows in every table, from `bench_gen`."""
        d, run, pid = self.d, self._run, self.project.id
        ran = "g.st <> 'CANCELED'"
        run(
            "INSERT INTO operations (id, project_id, action_id, action_version_id, action_name, "
            "action_version, action_digest, queue_id, queue_name, status, step_code, "
            "progress_percent, progress_message, n_queued, n_running, n_succeeded, n_failed, "
            "n_canceled, parameters, params_digest, result, error, exit_reason, created_by, "
            "source_type, source_id, idempotency_key, timeout, deadline_at, attempts, "
            "max_attempts, worker_id, log_bytes, steps, policy, requirements, created_at, "
            "updated_at, started_at, ended_at) "
            f"SELECT g.op_id, '{pid}', a.id, a.version_id, g.action, 1, a.digest, q.id, g.queue, "
            "g.st, NULL, "
            "CASE WHEN g.st = 'SUCCEEDED' THEN 100.0 END, "
            "CASE WHEN g.st = 'SUCCEEDED' THEN 'half way' END, 0, 0, "
            "CASE WHEN g.st = 'SUCCEEDED' THEN 1 ELSE 0 END, "
            "CASE WHEN g.st = 'FAILED' THEN 1 ELSE 0 END, "
            "CASE WHEN g.st = 'CANCELED' THEN 1 ELSE 0 END, "
            f"{d.json(PARAMS)}, 'sha256:' || {d.digest('g.i')}, "
            f"{d.json(RESULT)}, "
            f"{d.json(_error_json())}, "
            "CASE g.st WHEN 'SUCCEEDED' THEN 'SUCCEEDED' WHEN 'FAILED' THEN 'ValueError' "
            "ELSE 'CANCELED' END, "
            "g.created_by, 'Manual', g.created_by, "
            "CASE WHEN g.has_key THEN 'key-' || g.i END, "
            "CASE WHEN g.has_timeout THEN 3600.0 END, "
            "CASE WHEN g.has_timeout THEN g.created_at + 3600.0 END, "
            f"CASE WHEN {ran} THEN 1 ELSE 0 END, 3, "
            f"CASE WHEN {ran} THEN w.id END, CASE WHEN {ran} THEN 11 ELSE 0 END, "
            f"{d.json(NULL)}, {d.json(_literal(POLICY))}, {d.json(NULL)}, "
            f"g.created_at, g.ended_at, CASE WHEN {ran} THEN g.started_at END, g.ended_at "
            "FROM bench_gen g JOIN bench_actions a ON a.name = g.action "
            "JOIN bench_queues q ON q.name = g.queue JOIN bench_workers w ON w.n = g.wn "
            "ORDER BY g.i"
        )
        run(
            "INSERT INTO tasks (id, operation_id, project_id, queue_id, step_id, status, "
            "priority, parameters, attempts, max_attempts, available_at, created_at, updated_at) "
            f"SELECT g.task_id, g.op_id, '{pid}', q.id, 'main', g.st, 0, "
            f"{d.json(TASK_PARAMS)}, "
            f"CASE WHEN {ran} THEN 1 ELSE 0 END, 3, g.created_at, g.created_at, g.ended_at "
            "FROM bench_gen g JOIN bench_queues q ON q.name = g.queue ORDER BY g.i"
        )
        run(
            "INSERT INTO sessions (id, project_id, operation_id, worker_id, created_at, ended_at) "
            f"SELECT g.sess_id, '{pid}', g.op_id, w.id, g.claimed_at, g.ended_at + 1 "
            f"FROM bench_gen g JOIN bench_workers w ON w.n = g.wn WHERE {ran} ORDER BY g.i"
        )
        definition = (
            '\'{"taskRun": {"taskId": "\' || g.task_id || '
            '\'", "stepId": "main", "parameters": {"n": \' || g.i || \'}}}\''
        )
        run(
            "INSERT INTO session_actions (id, session_id, project_id, operation_id, task_id, "
            "worker_id, status, lease_epoch, lease_expires_at, definition, progress_percent, "
            "progress_message, process_exit_code, created_at, started_at, ended_at, "
            "worker_updated_at) "
            f"SELECT g.sa_id, g.sess_id, '{pid}', g.op_id, g.task_id, w.id, g.st, 1, NULL, "
            f"{d.json(definition)}, "
            "CASE WHEN g.st = 'SUCCEEDED' THEN 50.0 END, "
            "CASE WHEN g.st = 'SUCCEEDED' THEN 'half way' END, "
            "CASE WHEN g.st = 'FAILED' THEN 1 END, "
            "g.claimed_at, g.started_at, g.ended_at, g.ended_at "
            f"FROM bench_gen g JOIN bench_workers w ON w.n = g.wn WHERE {ran} ORDER BY g.i"
        )
        when = (
            "CASE h.tk WHEN 'c' THEN g.created_at WHEN 'claim' THEN g.claimed_at "
            "WHEN 'start' THEN g.started_at ELSE g.ended_at END"
        )
        run(
            "INSERT INTO status_history (entity_id, status, detail, at) "
            "SELECT CASE h.entity WHEN 'op' THEN g.op_id WHEN 'task' THEN g.task_id "
            "ELSE g.sa_id END, h.status, "
            "CASE h.detail WHEN 'created' THEN 'created' "
            "WHEN 'claimed' THEN 'claimed by ' || w.id "
            "WHEN 'assigned' THEN 'assigned to ' || w.id WHEN 'started' THEN 'started' "
            "WHEN 'boom' THEN 'the action raised ValueError: boom' "
            "WHEN 'canceled' THEN 'canceled by ' || g.created_by END, "
            f"{when} "
            "FROM bench_gen g JOIN bench_history h ON h.st = g.st "
            "JOIN bench_workers w ON w.n = g.wn ORDER BY g.i, h.ord"
        )
        run(
            "INSERT INTO events (project_id, type, entity_id, data, at) "
            f"SELECT '{pid}', h.type, g.op_id, {d.json('h.data')}, {when} "
            "FROM bench_gen g JOIN bench_events h ON h.st = g.st ORDER BY g.i, h.ord"
        )
        run(
            "INSERT INTO logs (operation_id, session_action_id, stream, line, at) "
            "SELECT g.op_id, g.sa_id, 'stdout', l.line, g.ended_at FROM bench_gen g "
            "JOIN (SELECT 1 AS n, 'working' AS line UNION ALL SELECT 2, 'done') l ON 1 = 1 "
            f"WHERE {ran} ORDER BY g.i, l.n"
        )

    def _indexes(self) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the loaded tables' indexes that back no constraint."""
        tables = ", ".join(f"'{name}'" for name in LOADED)
        if self.d.name == "sqlite":
            query = (
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({tables})"
            )
        else:
            query = (
                "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = 'public' "
                f"AND tablename IN ({tables}) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            )
        return [(name, sql) for name, sql in self.conn.execute(query).fetchall()]

    def load(self, total: int, progress: Callable[[str], None]) -> float:
        """Load `total` finished operations; returns the seconds it took.

        The loaded tables' secondary indexes are dropped first and built again at the
        end (a sorted build is much faster than keeping them up to date row by row);
        primary keys and unique constraints stay.
        """
        started = time.monotonic()
        now = time.time()
        if self.d.name == "postgresql":
            self._run("SET synchronous_commit = off")
            self._run("SET maintenance_work_mem = '512MB'")
            self._run("SET work_mem = '256MB'")
            # The rows point only at rows that exist: skip the foreign keys' triggers
            # (SQLite's connection here does not enforce them either).
            self._run("SET session_replication_role = replica")
        self._tables()
        indexes = self._indexes()
        for name, _ in indexes:
            self._run(f'DROP INDEX "{name}"')
        self.commit()
        for lo in range(0, total, CHUNK):
            hi = min(total, lo + CHUNK)
            self._gen(lo, hi, total, now)
            self._insert()
            self.commit()
            took = time.monotonic() - started
            progress(f"{hi:>10,} / {total:,} operations  {took:6.1f} s")
        for name, sql in indexes:
            self._run(sql)
            self.commit()
            progress(f"  index {name} built  {time.monotonic() - started:6.1f} s")
        return time.monotonic() - started

    def commit(self) -> None:
        """End the transaction."""
        self.conn.commit()


def _error_json() -> str:
    return (
        "CASE WHEN g.st = 'FAILED' THEN "
        '\'{"code": "ValueError", "message": "boom", "details": {"exit_code": 1}}\' '
        "ELSE 'null' END"
    )


def connect(url: str) -> tuple[Any, Dialect]:
    """A DB-API connection for the load, and its dialect."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
        return conn, Sqlite()
    return psycopg.connect(url), Postgres()
