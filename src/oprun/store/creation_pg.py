"""New operations on PostgreSQL in one statement (issue 12).

A request's operations, their tasks, their `created` status history and
`operation.created` events, the check that each action's latest version is the one
the request took (`CheckedOperation`), the check that the versions and queues named
are there (`operations` has no foreign keys to them: `_KINDS`) and the NOTIFY of the
projects' work and events keys go as one statement of data-modifying CTEs: one round
trip however many rows. The rows travel as JSON documents expanded by
`json_to_recordset`: the columns that differ by row (`PER_OPERATION`, `PER_TASK`) row
by row, the rest once per kind of row (a bulk request of one action sends its action,
queue, policy and times once), each value as `oprun.store.batch` sends it
(`travels_as_text`). NOTIFY is delivered at commit only, as `Tx`'s is. When an
action's latest version moved on, or a version or queue is not there, the statement
writes and notifies nothing and says which: it is atomic by itself, so a request that
needs nothing else runs it outside a transaction. A large request is several such
statements in one transaction, pipelined (`PipelinedCreation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

import psycopg
from sqlalchemy import JSON, Connection, Dialect, Table, TextClause, text
from sqlalchemy.exc import DBAPIError

from oprun.store import schema as t
from oprun.store.batch import (
    encode_json,
    joined,
    record_type,
    record_value,
    split,
    travels_as_text,
)
from oprun.store.calls import CallCounter
from oprun.store.closing_pg import NOTIFY_KEYS


class LostQueue(Exception):
    """A queue id an operation was to join names no queue of its project: nothing was written."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"no queue {', '.join(ids)}")
        self.ids = list(ids)


CREATED_EVENT = {"status": "QUEUED"}
"""The data of an `operation.created` event."""


PER_OPERATION = (
    "id",
    "parameters",
    "params_digest",
    "idempotency_key",
    "timeout",
    "deadline_at",
    "n_queued",
    "steps",
)
"""Columns of `operations` sent row by row; the others are sent once per kind of row."""

PER_TASK = ("id", "operation_id", "step_id", "parameters", "available_at")
"""Columns of `tasks` sent row by row; the others are sent once per kind of row."""


def _fields(table: Table, names: Sequence[str]) -> str:
    return ", ".join(["k int8", *(f'"{n}" {record_type(table.c[n])}' for n in names)])


def _insert(table: Table, each: Sequence[str], shared: Sequence[str], param: str) -> str:
    """INSERT of `table` from `:<param>` (rows of `each`) joined to `:<param>_kinds` (`shared`)."""
    columns = ", ".join(f'"{n}"' for n in (*each, *shared))
    values = ", ".join(
        [
            *(record_value(table.c[n], n, "u") for n in each),
            *(record_value(table.c[n], n, "s") for n in shared),
        ]
    )
    return (
        f"INSERT INTO {table.name} ({columns}) SELECT {values} "
        f"FROM json_to_recordset(CAST(:{param} AS json)) AS u({_fields(table, each)}) "
        f"JOIN json_to_recordset(CAST(:{param}_kinds AS json)) AS s({_fields(table, shared)}) "
        f"ON s.k = u.k WHERE {_FRESH}"
    )


_FRESH = "NOT EXISTS (SELECT 1 FROM stale) AND NOT EXISTS (SELECT 1 FROM lost_queue)"
"""Every write of the statement is skipped when an action's latest version moved on, or
a version or queue it names is not there."""

_KINDS = (
    "kinds AS (SELECT DISTINCT s.project_id, s.action_id, s.action_version_id, s.queue_id "
    "FROM json_to_recordset(CAST(:ops_kinds AS json)) "
    "AS s(project_id text, action_id text, action_version_id text, queue_id text))"
)
"""The project, action, version and queue of each kind of operation written.

`operations` has no foreign keys to them (migration 0012): a key is checked row by
row, and these are checked here once per kind. Nothing deletes them; the ids come from
the process's caches, which a database restored under a running server can outdate."""
_LOST_QUEUE = (
    "lost_queue AS (SELECT k.queue_id AS id FROM kinds k WHERE NOT EXISTS "
    "(SELECT 1 FROM queues q WHERE q.id = k.queue_id AND q.project_id = k.project_id))"
)
_LOST_VERSION = (
    "SELECT k.action_id FROM kinds k WHERE NOT EXISTS (SELECT 1 FROM action_versions v "
    "JOIN actions a ON a.id = v.action_id WHERE v.id = k.action_version_id "
    "AND a.id = k.action_id AND a.project_id = k.project_id)"
)


@lru_cache(maxsize=16)
def _statement(
    op_each: tuple[str, ...],
    op_shared: tuple[str, ...],
    task_each: tuple[str, ...],
    task_shared: tuple[str, ...],
) -> TextClause:
    return text(
        f"WITH {_KINDS}, {_LOST_QUEUE}, "
        f"stale AS (SELECT a.id FROM unnest({split('latest_ids')}, "
        f"CAST({split('latest_versions')} AS int8[])) AS l(id, v) "
        "JOIN actions a ON a.id = l.id "
        f"WHERE a.latest_version <> l.v UNION {_LOST_VERSION}), "
        f"o AS ({_insert(t.operations, op_each, op_shared, 'ops')}), "
        f"t AS ({_insert(t.tasks, task_each, task_shared, 'tasks')}), "
        "h AS (INSERT INTO status_history (entity_id, status, detail, at) "
        "SELECT u.id, :status, :detail, CAST(:now AS float8) "
        f"FROM unnest({split('ids')}) WITH ORDINALITY AS u(id, n) WHERE {_FRESH} "
        "ORDER BY u.n), "
        "e AS (INSERT INTO events (project_id, type, entity_id, data, at) "
        "SELECT u.p, :event, u.id, CAST(:data AS jsonb), CAST(:now AS float8) "
        f"FROM unnest({split('ids')}, {split('projects')}) WITH ORDINALITY "
        f"AS u(id, p, n) WHERE {_FRESH} ORDER BY u.n), "
        f"n AS ({NOTIFY_KEYS} WHERE {_FRESH}) "
        "SELECT (SELECT count(*) FROM n) AS notified, ARRAY(SELECT id FROM stale) AS stale, "
        "ARRAY(SELECT id FROM lost_queue) AS lost_queues"
    )


@lru_cache(maxsize=16)
def _layout(
    table: Table, columns: tuple[str, ...], each: tuple[str, ...]
) -> tuple[
    tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], Callable[[Any], Any]
]:
    """How `_split` lays out rows of `columns`: what it would otherwise work out per call.

    (shared columns, `each` columns sent as JSON text, shared JSON columns, shared
    columns sent as JSON text, the getter of the shared plain columns' values).
    """
    shared = tuple(n for n in columns if n not in each)
    text_json = tuple(n for n in each if travels_as_text(table.c[n]))
    # A kind is the shared columns' values, a JSON column's by identity (a dict is not
    # hashable; rows built from one version share its policy's dict).
    plain = [n for n in shared if not isinstance(table.c[n].type, JSON)]
    nested = tuple(n for n in shared if isinstance(table.c[n].type, JSON))
    shared_text = tuple(n for n in shared if travels_as_text(table.c[n]))
    values: Callable[[Any], Any] = itemgetter(*plain) if plain else (lambda row: ())
    return shared, text_json, nested, shared_text, values


def _split(
    table: Table, rows: Sequence[Mapping[str, Any]], each: Sequence[str]
) -> tuple[str, str, tuple[str, ...]]:
    """(rows' document, kinds' document, shared columns): columns not in `each` once per kind.

    Rows whose shared columns hold the same values (a JSON column: the same object) are
    one kind; each row names its kind as `k`.
    """
    shared, text_json, nested, shared_text, values = _layout(table, tuple(rows[0]), tuple(each))
    kinds: dict[tuple[Any, ...], int] = {}
    kind_rows: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    for row in rows:
        key = (values(row), *[id(row[n]) for n in nested])
        k = kinds.get(key)
        if k is None:
            k = kinds[key] = len(kind_rows)
            kind = {n: row[n] for n in shared}
            for n in shared_text:
                kind[n] = encode_json(kind[n])
            kind_rows.append({"k": k, **kind})
        doc = {n: row[n] for n in each}
        for n in text_json:
            doc[n] = encode_json(doc[n])
        doc["k"] = k
        docs.append(doc)
    return encode_json(docs), encode_json(kind_rows), shared


def _request(
    now: float,
    op_rows: Sequence[Mapping[str, Any]],
    task_rows: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    latest: Mapping[str, int],
) -> tuple[TextClause, dict[str, Any]]:
    """The statement that writes these rows, and its parameters."""
    from oprun.store.postgres import CHANNEL  # postgres.py imports the store's modules

    ops, op_kinds, op_shared = _split(t.operations, op_rows, PER_OPERATION)
    tasks, task_kinds, task_shared = _split(t.tasks, task_rows, PER_TASK)
    statement = _statement(PER_OPERATION, op_shared, PER_TASK, task_shared)
    return statement, {
        "ops": ops,
        "ops_kinds": op_kinds,
        "tasks": tasks,
        "tasks_kinds": task_kinds,
        "status": "QUEUED",
        "detail": "created",
        "now": now,
        "ids": joined(op["id"] for op in op_rows),
        "projects": joined(op["project_id"] for op in op_rows),
        "event": "operation.created",
        "data": encode_json(CREATED_EVENT),
        "channel": CHANNEL,
        "keys": joined(keys),
        "latest_ids": joined(latest),
        "latest_versions": joined(str(v) for v in latest.values()),
    }


def create_in_one_statement(
    conn: Connection,
    now: float,
    op_rows: Sequence[Mapping[str, Any]],
    task_rows: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    latest: Mapping[str, int],
) -> list[str]:
    """Insert the rows, their history and events, NOTIFY `keys`; the stale actions' ids.

    `latest`: the version each action id must still have as its latest. An action whose
    version is not there is stale too. A non-empty answer means nothing was written (the
    statement is atomic by itself, so it may run outside a transaction:
    `StoreBase.write_one`); so does `LostQueue`.
    """
    statement, params = _request(now, op_rows, task_rows, keys, latest)
    row = conn.execute(statement, params).one()
    if row.lost_queues:
        raise LostQueue(row.lost_queues)
    return list(row.stale)


CHUNK = 200
"""Operations per statement of a `PipelinedCreation`."""


class PipelinedCreation:
    """A large request's operations, written a chunk at a time, each sent without waiting.

    Building a chunk's rows costs the server about as much as PostgreSQL's writing
    them: sent as one statement, the two take turns. Here PostgreSQL writes a chunk
    while the next one is built (psycopg's pipeline mode: `send` returns at once), and
    the results are read when the pipeline closes. Within the caller's transaction:
    the chunks commit together or not at all, and a stale chunk (`stale`, `LostQueue`)
    is undone with the others when the caller raises. The SQL is
    `create_in_one_statement`'s, executed by psycopg directly (SQLAlchemy would wait
    for each statement's rows); `calls` counts them.
    """

    def __init__(self, conn: Connection, now: float, calls: CallCounter) -> None:
        """Open a pipeline on `conn`'s psycopg connection (in a transaction)."""
        self._conn = conn
        self._driver: Any = conn.connection.driver_connection
        self._now = now
        self._calls = calls
        self._cursors: list[Any] = []
        self._pipeline: Any = None

    def __enter__(self) -> PipelinedCreation:
        with self._as_sqlalchemy_raises():
            self._pipeline = self._driver.pipeline()
            self._pipeline.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            with self._as_sqlalchemy_raises():
                self._pipeline.__exit__(*exc)  # sends what is left and reads every result
        finally:
            self._calls.pipelined(len(self._cursors))

    @contextmanager
    def _as_sqlalchemy_raises(self) -> Iterator[None]:
        """Psycopg's errors as SQLAlchemy raises them, so callers tell them apart the same.

        A key taken meanwhile is an `IntegrityError` (the store retries), a lost
        connection an `OperationalError` with the connection invalidated (an outage,
        503: `store.outages`), as for any statement SQLAlchemy runs.
        """
        try:
            yield
        except psycopg.Error as error:
            lost = self._conn.dialect.is_disconnect(cast(Any, error), self._driver, None)
            if lost:
                self._conn.invalidate(error)
            raise DBAPIError.instance(
                "pipelined creation", None, error, psycopg.Error, connection_invalidated=lost
            ) from error

    def send(
        self,
        op_rows: Sequence[Mapping[str, Any]],
        task_rows: Sequence[Mapping[str, Any]],
        keys: Iterable[str],
        latest: Mapping[str, int],
    ) -> None:
        """Send one chunk's statement; PostgreSQL starts on it while this returns."""
        statement, params = _request(self._now, op_rows, task_rows, keys, latest)
        with self._as_sqlalchemy_raises():
            cursor = self._driver.cursor()
            cursor.execute(_driver_sql(statement, self._conn.dialect), params)
        self._cursors.append(cursor)

    def stale(self) -> list[str]:
        """Once closed: the stale actions' ids of every chunk; `LostQueue` if a queue was."""
        rows = [cursor.fetchone() for cursor in self._cursors]
        lost = sorted({queue for row in rows for queue in row[2]})
        if lost:
            raise LostQueue(lost)
        return sorted({action for row in rows for action in row[1]})


@lru_cache(maxsize=16)
def _driver_sql(statement: TextClause, dialect: Dialect) -> str:
    """`statement` as psycopg takes it (named placeholders)."""
    return str(statement.compile(dialect=dialect))
