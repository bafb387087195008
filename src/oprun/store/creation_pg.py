"""New operations on PostgreSQL in one statement (issue 12).

A request's operations, their tasks, their `created` status history and
`operation.created` events, the check that each action's latest version is the one
the request took (`CheckedOperation`) and the NOTIFY of the projects' work and events
keys go as one statement of data-modifying CTEs: one round trip however many rows.
The rows travel as JSON documents expanded by `json_to_recordset`, a JSON column's
value as its JSON text (so None is stored as JSON null, as SQLAlchemy's JSON type
stores it). The tasks' foreign key to their operations is checked at the end of the
statement, once both are in. NOTIFY is delivered at commit only, as `Tx`'s is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Connection, Float, Integer, Table, TextClause, text

from oprun.store import schema as t

_encode = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False).encode

CREATED_EVENT = {"status": "QUEUED"}
"""The data of an `operation.created` event."""


def _record_type(table: Table, name: str) -> str:
    kind = table.c[name].type
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, Integer):
        return "int8"
    return "text"


def _recordset(table: Table, names: Sequence[str], param: str) -> tuple[str, str]:
    """(column list, SELECT list FROM json_to_recordset) inserting `names` of `table`."""
    fields = ", ".join(f'"{n}" {_record_type(table, n)}' for n in names)
    values = ", ".join(
        f'CAST(u."{n}" AS jsonb)' if isinstance(table.c[n].type, JSON) else f'u."{n}"'
        for n in names
    )
    columns = ", ".join(f'"{n}"' for n in names)
    return columns, f"SELECT {values} FROM json_to_recordset(CAST(:{param} AS json)) AS u({fields})"


@lru_cache(maxsize=16)
def _statement(op_names: tuple[str, ...], task_names: tuple[str, ...]) -> TextClause:
    op_columns, op_select = _recordset(t.operations, op_names, "ops")
    task_columns, task_select = _recordset(t.tasks, task_names, "tasks")
    return text(
        f"WITH o AS (INSERT INTO operations ({op_columns}) {op_select}), "
        f"t AS (INSERT INTO tasks ({task_columns}) {task_select}), "
        "h AS (INSERT INTO status_history (entity_id, status, detail, at) "
        "SELECT u.id, :status, :detail, CAST(:now AS float8) "
        "FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS u(id, n) ORDER BY u.n), "
        "e AS (INSERT INTO events (project_id, type, entity_id, data, at) "
        "SELECT u.p, :event, u.id, CAST(:data AS jsonb), CAST(:now AS float8) "
        "FROM unnest(CAST(:ids AS text[]), CAST(:projects AS text[])) WITH ORDINALITY "
        "AS u(id, p, n) ORDER BY u.n), "
        "n AS (SELECT pg_notify(:channel, k) FROM unnest(CAST(:keys AS text[])) AS k) "
        "SELECT (SELECT count(*) FROM n) AS notified, "
        "ARRAY(SELECT a.id FROM unnest(CAST(:latest_ids AS text[]), CAST(:latest_versions AS "
        "int8[])) AS l(id, v) JOIN actions a ON a.id = l.id WHERE a.latest_version <> l.v) "
        "AS stale"
    )


def _document(table: Table, rows: Sequence[Mapping[str, Any]]) -> str:
    nested = [n for n in rows[0] if isinstance(table.c[n].type, JSON)]
    return _encode([{**row, **{n: _encode(row[n]) for n in nested}} for row in rows])


def create_in_one_statement(
    conn: Connection,
    now: float,
    op_rows: Sequence[Mapping[str, Any]],
    task_rows: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    latest: Mapping[str, int],
) -> list[str]:
    """Insert the rows, their history and events, NOTIFY `keys`; the stale actions' ids.

    `latest`: the version each action id must still have as its latest. A non-empty
    answer means the caller must roll back (the rows and NOTIFYs went in).
    """
    from oprun.store.postgres import CHANNEL  # postgres.py imports the store's modules

    statement = _statement(tuple(op_rows[0]), tuple(task_rows[0]))
    row = conn.execute(
        statement,
        {
            "ops": _document(t.operations, op_rows),
            "tasks": _document(t.tasks, task_rows),
            "status": "QUEUED",
            "detail": "created",
            "now": now,
            "ids": [op["id"] for op in op_rows],
            "projects": [op["project_id"] for op in op_rows],
            "event": "operation.created",
            "data": _encode(CREATED_EVENT),
            "channel": CHANNEL,
            "keys": sorted(keys),
            "latest_ids": list(latest),
            "latest_versions": list(latest.values()),
        },
    ).one()
    return list(row.stale)
