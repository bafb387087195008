"""The end of a write transaction on PostgreSQL in one statement (issue 12).

What a transaction held back (`Tx.later`: set-based writes nothing in it reads
back) and buffered (`Tx`: status history, events, audit rows), and the NOTIFY of
its keys, go as one statement of data-modifying CTEs: one round trip at the end of
every write, where each was a statement of its own. Each write's rows travel as one
JSON document (`oprun.store.batch`), in the order they were given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import TextClause, text

from oprun.store.base import Tx
from oprun.store.batch import joined, split

NOTIFY_KEYS = f"SELECT pg_notify(:channel, k) FROM unnest({split('keys')}) AS k"
"""NOTIFY on `:channel` of each key of `:keys` (`joined`)."""
_statements: dict[tuple[tuple[tuple[Any, ...], ...], bool], TextClause] = {}
"""Statements by the shapes of their writes and whether they notify (a few kinds in all)."""
_MAX_STATEMENTS = 256


def close_in_one_statement(tx: Tx, channel: str, wired_keys: Iterable[str]) -> None:
    """Write what `tx` held back and buffered, NOTIFY `wired_keys` on `channel`: one statement.

    Nothing is sent when there is nothing to write or to notify.
    """
    keys = sorted(wired_keys)
    writes = tx.take_writes()
    if not writes and not keys:
        return
    kind = (tuple(w.shape for w in writes), bool(keys))
    statement = _statements.get(kind)
    if statement is None:
        ctes = ", ".join(f"w{i} AS ({w.sql(f'rows{i}')})" for i, w in enumerate(writes))
        final = f"SELECT count(*) FROM ({NOTIFY_KEYS}) AS n" if keys else "SELECT 0"
        statement = text(f"WITH {ctes} {final}" if ctes else final)
        if len(_statements) >= _MAX_STATEMENTS:
            _statements.clear()
        _statements[kind] = statement
    params: dict[str, object] = {f"rows{i}": w.document() for i, w in enumerate(writes)}
    if keys:
        params |= {"channel": channel, "keys": joined(keys)}
    tx.conn.execute(statement, params)
