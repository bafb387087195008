"""The end of a write transaction on PostgreSQL in one statement (issue 12).

What a transaction buffered (`Tx`: status history, events, audit rows) and the
NOTIFY of its keys go as one statement of data-modifying CTEs: one round trip at
the end of every write, where a statement per table and one for the NOTIFY were
three. Each table's rows travel as one JSON document (`oprun.store.batch`), in the
order they were buffered, as `insert_rows` sends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import Table, TextClause, text

from oprun.store.base import Tx
from oprun.store.batch import insert_sql, rows_document

_NOTIFY = "SELECT pg_notify(:channel, k) FROM unnest(CAST(:keys AS text[])) AS k"


@lru_cache(maxsize=64)
def _statement(tables: tuple[tuple[Table, tuple[str, ...]], ...], notify: bool) -> TextClause:
    """The CTEs inserting into `tables` (each with its columns), then the NOTIFY or nothing."""
    ctes = ", ".join(
        f"w{i} AS ({insert_sql(table, names, f'rows{i}')})"
        for i, (table, names) in enumerate(tables)
    )
    final = f"SELECT count(*) FROM ({_NOTIFY}) AS n" if notify else "SELECT 0"
    return text(f"WITH {ctes} {final}" if ctes else final)


def close_in_one_statement(tx: Tx, channel: str, wired_keys: Iterable[str]) -> None:
    """Insert what `tx` buffered and NOTIFY `wired_keys` on `channel`: one statement.

    Nothing is sent when there is nothing to write or to notify.
    """
    keys = sorted(wired_keys)
    taken = [(table, tuple(rows[0]), rows) for table, rows in tx.take_rows()]
    if not taken and not keys:
        return
    statement = _statement(tuple((table, names) for table, names, _ in taken), bool(keys))
    params: dict[str, object] = {
        f"rows{i}": rows_document(table, names, rows)
        for i, (table, names, rows) in enumerate(taken)
    }
    if keys:
        params |= {"channel": channel, "keys": keys}
    tx.conn.execute(statement, params)
