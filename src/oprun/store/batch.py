"""Set-based writes: a batch of rows in one statement per table.

An executemany hands the driver one statement per row: on PostgreSQL that is one
statement for the server to run per row and, in psycopg's pipeline, one round of
Python bookkeeping per row, the largest CPU cost of the hot path. Here a batch
goes as one statement whose rows travel as one JSON document, encoded by orjson
(`encode_json`) and expanded by PostgreSQL's `json_to_recordset`:
`INSERT ... SELECT ... FROM json_to_recordset(...)` and `UPDATE ... FROM
json_to_recordset(...)`. The statement's text is the same for any number of rows,
so PostgreSQL prepares it once per connection. SQLite runs in process, where
executemany is already cheap: it keeps it.

Updates follow one naming rule, shared with the SQLAlchemy forms the SQLite path
runs: `b_<column>` is matched (`WHERE`), `v_<column>` is written, `d_<column>` is
added to the column's current value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Dialect,
    Float,
    Integer,
    Table,
    TextClause,
    bindparam,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy import text as sa_text
from sqlalchemy import update as sa_update
from sqlalchemy.sql.dml import Update

__all__ = [
    "BatchUpdate",
    "Deferred",
    "encode_json",
    "insert_rows",
    "insert_sql",
    "joined",
    "padded",
    "record_type",
    "record_value",
    "rows_document",
    "split",
    "travels_as_text",
]


def encode_json(value: Any) -> str:
    """The JSON text of `value`, for batch documents and JSON columns alike.

    It encodes every document a batch statement sends and every JSON column's value
    (both engines' `json_serializer`). orjson encodes these documents about 8 times as
    fast as the standard library's C encoder did, which was a tenth of the server's CPU
    in a drain. It writes NaN and the infinities as null where `json` with
    `allow_nan=False` raised; none gets here, as every number a client sends is refused
    unless finite (`oprun.domain.text`). Like `json`, it writes a key that is not text
    as text (`{1: 2}` as `{"1":2}`); unlike its default, it writes text as UTF-8, not
    as escapes (`ensure_ascii`).
    """
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def split(param: str) -> str:
    """SQL of the text array a `joined` parameter named `param` holds."""
    return f"string_to_array(:{param}, ',')"


def joined(values: Iterable[str]) -> str:
    """`values` comma-joined, for `split(param)` in a statement.

    psycopg dumps a Python list as an array parameter in 40 µs for three strings and
    4 ms for 1,000; a join takes under a microsecond and 20 µs. For our own ids and
    keys, which are never empty and never hold a comma: one that did would be a bug, and
    would not split back as it was (`ValueError`).
    """
    items = list(values)
    text = ",".join(items)
    if text.count(",") > max(len(items) - 1, 0) or "" in items:
        raise ValueError(f"a value to join is empty or holds a comma: {items!r:.200}")
    return text


def padded(values: Iterable[str]) -> list[str]:
    """`values` sorted, the last repeated up to a power of two, for an expanding `IN`.

    An expanding `IN` writes one placeholder per value, so each length is a statement
    of its own. psycopg prepares a statement once it has run five times on a connection;
    until then PostgreSQL plans it at every run, which costs more than the run: 0.6 ms
    against 0.1 ms for a report's lock of its operations. A drain of 3,000 no-ops
    planned the report's two locks 183 times each. Padded, a batch of up to 512 takes
    one of ten texts, each prepared once per connection. A repeated value leaves `IN`
    as it was.
    """
    items = sorted(values)
    if not items:
        return items
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[-1]] * (size - len(items))


def travels_as_text(column: Column[Any]) -> bool:
    """Whether a column's value travels in a JSON record as its own JSON text.

    A nullable JSON column's does, and is cast back to jsonb in the statement, so
    Python's None is stored as JSON null, as SQLAlchemy's JSON type stores it; a NOT
    NULL one's travels nested (JSON null is not at stake there).
    """
    return isinstance(column.type, JSON) and bool(column.nullable)


def record_type(column: Column[Any]) -> str:
    """The type a column's values have in a JSON record (`json_to_recordset`)."""
    kind = column.type
    if isinstance(kind, JSON):
        return "text" if travels_as_text(column) else "jsonb"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, Integer):  # BigInteger is one too
        return "int8"
    return "text"


def record_value(column: Column[Any], field: str, alias: str = "u") -> str:
    """Record field `field` of `alias` as the column's value."""
    value = f'{alias}."{field}"'
    return f"CAST({value} AS jsonb)" if travels_as_text(column) else value


def _recordset(keys: Sequence[tuple[str, Column[Any]]], param: str = "rows") -> str:
    fields = ", ".join(f'"{key}" {record_type(column)}' for key, column in keys)
    return f"json_to_recordset(CAST(:{param} AS json)) AS u({fields})"


def _document(keys: Sequence[tuple[str, Column[Any]]], rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as one JSON array of objects (`travels_as_text` columns' values as JSON text).

    A row's keys beyond `keys` travel too and are ignored by `json_to_recordset`.
    """
    texts = [key for key, column in keys if travels_as_text(column)]
    if texts:
        rows = [{**row, **{key: encode_json(row[key]) for key in texts}} for row in rows]
    return encode_json(rows if isinstance(rows, list) else list(rows))


def insert_sql(table: Table, names: Sequence[str], param: str = "rows") -> str:
    """`INSERT INTO table (names) SELECT ... FROM json_to_recordset(:param)`, as text.

    The rows travel as `rows_document(table, names, rows)` in parameter `param`.
    """
    keys = [(name, table.c[name]) for name in names]
    selected = ", ".join(record_value(column, name) for name, column in keys)
    columns = ", ".join(f'"{name}"' for name in names)
    return (
        f'INSERT INTO "{table.name}" ({columns}) SELECT {selected} FROM {_recordset(keys, param)}'
    )


def rows_document(table: Table, names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """The JSON document `insert_sql(table, names)` expands into rows."""
    return _document([(name, table.c[name]) for name in names], rows)


@lru_cache(maxsize=64)
def _bulk_insert(table: Table, names: tuple[str, ...]) -> TextClause:
    return sa_text(insert_sql(table, names))


_DriverInsert = tuple[str, tuple[tuple[int, Callable[[Any], Any]], ...], tuple[Any, ...]]


@lru_cache(maxsize=64)
def _driver_insert(table: Table, names: tuple[str, ...], dialect: Dialect) -> _DriverInsert | None:
    """An INSERT of `names` for SQLite's own executemany, or None where SQLAlchemy must run.

    (its SQL; the position and bind processor of each named column that has one, as
    SQLAlchemy's type would bind it; the scalar defaults of the columns the rows leave
    out, which follow the named ones in the SQL). None when a column left out has a
    default computed per row, which only SQLAlchemy's insert computes.
    """
    left_out = [c for c in table.c if c.name not in names and c.default is not None]
    if not all(c.default is not None and c.default.is_scalar for c in left_out):
        return None
    columns = [*names, *(c.name for c in left_out)]
    quoted = ", ".join(f'"{name}"' for name in columns)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join("?" * len(columns))})'
    processors = (table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    converters = tuple((i, p) for i, p in enumerate(processors) if p is not None)
    return sql, converters, tuple(getattr(c.default, "arg", None) for c in left_out)


def _insert_through_driver(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    names = tuple(rows[0])
    insert = _driver_insert(table, names, conn.dialect)
    if insert is None:
        conn.execute(sa_insert(table), list(rows))
        return
    sql, converters, defaults = insert
    bound = []
    for row in rows:
        values = [row[name] for name in names]
        for i, convert in converters:
            values[i] = convert(values[i])
        bound.append((*values, *defaults))
    conn.exec_driver_sql(sql, bound)


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (each with the same keys) into `table`: one statement on PostgreSQL.

    On SQLite, several rows go to the driver's executemany, each value bound as its
    column's type binds it but without SQLAlchemy's processing of each row's
    parameters, a third of a bulk invoke's time there. One row goes through SQLAlchemy.
    """
    if not rows:
        return
    if len(rows) > 1 and conn.dialect.name == "sqlite":
        _insert_through_driver(conn, table, rows)
        return
    if len(rows) == 1 or conn.dialect.name != "postgresql":
        conn.execute(sa_insert(table), list(rows))
        return
    names = tuple(rows[0])
    keys = [(name, table.c[name]) for name in names]
    conn.execute(_bulk_insert(table, names), {"rows": _document(keys, rows)})


@dataclass(frozen=True)
class BatchUpdate:
    """An UPDATE of many rows, each matched on `match` columns: one statement on PostgreSQL.

    `match`: parameter `b_<name>` equals column `<name>` (the first is the row's key,
    unique in a batch); `write`: column `<name>` takes `v_<name>`; `add`: column
    `<name>` grows by `d_<name>`.
    """

    table: Table
    match: tuple[str, ...]
    write: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    _keys: tuple[tuple[str, Column[Any]], ...] = field(init=False, repr=False, compare=False)
    _sets: str = field(init=False, repr=False, compare=False)
    _where: str = field(init=False, repr=False, compare=False)
    _pg: TextClause = field(init=False, repr=False, compare=False)
    _sa: Update = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.table.c
        keys = (
            *((f"b_{n}", c[n]) for n in self.match),
            *((f"v_{n}", c[n]) for n in self.write),
            *((f"d_{n}", c[n]) for n in self.add),
        )
        object.__setattr__(self, "_keys", keys)
        sets = [f'"{n}" = {record_value(c[n], f"v_{n}")}' for n in self.write]
        sets += [f'"{n}" = t."{n}" + u."d_{n}"' for n in self.add]
        where = " AND ".join(f't."{n}" = u."b_{n}"' for n in self.match)
        object.__setattr__(self, "_sets", ", ".join(sets))
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_pg", sa_text(self.sql()))
        values: dict[str, Any] = {n: bindparam(f"v_{n}") for n in self.write}
        values.update({n: c[n] + bindparam(f"d_{n}") for n in self.add})
        statement = sa_update(self.table).values(values)
        for n in self.match:
            statement = statement.where(c[n] == bindparam(f"b_{n}"))
        object.__setattr__(self, "_sa", statement)

    def sql(self, param: str = "rows") -> str:
        """The PostgreSQL statement, its rows in the JSON document parameter `param`.

        The rows' keys are matched twice: in the join, and as `= ANY` of an array
        read from the same document. PostgreSQL guesses 100 rows for any
        `json_to_recordset`, so on a table whose statistics hold a few thousand rows
        (a new or fast-growing one) the join alone plans as a hash join over a scan
        of the whole table, for every batch; a key `= ANY` of an array plans as
        probes of the primary key.
        """
        key = self.match[0]
        kind = record_type(self.table.c[key])
        keys = (
            f"ARRAY(SELECT CAST(j->>'b_{key}' AS {kind}) "
            f"FROM json_array_elements(CAST(:{param} AS json)) AS j)"
        )
        return (
            f'UPDATE "{self.table.name}" AS t SET {self._sets} '
            f"FROM {_recordset(self._keys, param)} WHERE {self._where} "
            f'AND t."{key}" = ANY({keys})'
        )

    def _check(self, rows: Sequence[Mapping[str, Any]]) -> None:
        key = f"b_{self.match[0]}"
        if len({row[key] for row in rows}) != len(rows):
            # UPDATE ... FROM writes a row once however many of the batch match it:
            # refused on both backends, so they never differ.
            raise ValueError(f"a batch update of {self.table.name} names a row twice")

    def document(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """The rows as the JSON document `sql` expands (a row named twice is refused)."""
        self._check(rows)
        return _document(self._keys, rows)

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Apply `rows` (each with every `b_`, `v_` and `d_` key of this update)."""
        if not rows:
            return
        if conn.dialect.name != "postgresql" or len(rows) == 1:
            self._check(rows)
            conn.execute(self._sa, list(rows))
            return
        conn.execute(self._pg, {"rows": self.document(rows)})


@dataclass(frozen=True)
class Deferred:
    """A set-based write held back to the end of its transaction (`Tx.later`).

    Nothing in the transaction reads what it writes before the end, and no other
    write of that end touches its rows: on PostgreSQL all of them go as one statement
    of data-modifying CTEs, which see the same snapshot and not each other's changes.
    """

    target: Table | BatchUpdate
    rows: Sequence[Mapping[str, Any]]

    @property
    def shape(self) -> tuple[Any, ...]:
        """What its SQL text depends on."""
        if isinstance(self.target, BatchUpdate):
            return (self.target,)
        return (self.target, tuple(self.rows[0]))

    def sql(self, param: str) -> str:
        """Its PostgreSQL statement, its rows in the JSON document parameter `param`."""
        if isinstance(self.target, BatchUpdate):
            return self.target.sql(param)
        return insert_sql(self.target, tuple(self.rows[0]), param)

    def document(self) -> str:
        """Its rows as the JSON document `sql` expands."""
        if isinstance(self.target, BatchUpdate):
            return self.target.document(self.rows)
        return rows_document(self.target, tuple(self.rows[0]), self.rows)

    def run(self, conn: Connection) -> None:
        """Write it alone, on any backend."""
        if isinstance(self.target, BatchUpdate):
            self.target.run(conn, self.rows)
        else:
            insert_rows(conn, self.target, self.rows)
