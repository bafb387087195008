"""Set-based writes (`oprun.store.batch`) store exactly what row-by-row statements store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)

from oprun.store import schema as t
from oprun.store.batch import BatchUpdate, insert_rows

_meta = MetaData()
_things = Table(
    "batch_things",
    _meta,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("note", String(256)),
    Column("at", Float),
    Column("count", Integer, nullable=False),
    Column("data", t.Json),
)

ROWS = [
    {"id": "a", "status": "QUEUED", "note": None, "at": 1.0, "count": 1, "data": None},
    {
        "id": "b",
        "status": "QUEUED",
        "note": 'quote " backslash \\ tab \t newline \n euro \u20ac \\x00',
        "at": 1_780_000_000.123456789,
        "count": 2,
        "data": {"nested": [1, 2.5, None, "é"], "empty": {}},
    },
    {"id": "c", "status": "RUNNING", "note": "", "at": 3, "count": 0, "data": [None]},
]


@pytest.fixture
def conn(database_url):
    """A connection to a fresh database of each backend, with a table of every kind of column."""
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    _meta.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def _all(conn) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(select(_things).order_by(_things.c.id))]


def test_inserted_rows_read_back_as_given(conn):
    insert_rows(conn, _things, ROWS)
    got = _all(conn)
    assert got == [{**row, "at": float(row["at"])} for row in ROWS]
    # JSON null is stored as JSON, as SQLAlchemy's own JSON type stores it.
    if conn.dialect.name == "postgresql":
        assert conn.exec_driver_sql(
            "SELECT data IS NULL, jsonb_typeof(data) FROM batch_things WHERE id = 'a'"
        ).one() == (False, "null")


def test_an_update_writes_matches_and_adds(conn):
    insert_rows(conn, _things, ROWS)
    update = BatchUpdate(_things, match=("id", "status"), write=("status", "data"), add=("count",))
    update.run(
        conn,
        [
            {
                "b_id": "a",
                "b_status": "QUEUED",
                "v_status": "RUNNING",
                "v_data": {"x": 1},
                "d_count": 5,
            },
            {
                "b_id": "b",
                "b_status": "QUEUED",
                "v_status": "FAILED",
                "v_data": None,
                "d_count": -2,
            },
            # compare-and-set: c is RUNNING, not QUEUED, so it is left as it is
            {"b_id": "c", "b_status": "QUEUED", "v_status": "CANCELED", "v_data": 7, "d_count": 9},
        ],
    )
    got = {row["id"]: row for row in _all(conn)}
    assert (got["a"]["status"], got["a"]["data"], got["a"]["count"]) == ("RUNNING", {"x": 1}, 6)
    assert (got["b"]["status"], got["b"]["data"], got["b"]["count"]) == ("FAILED", None, 0)
    assert (got["c"]["status"], got["c"]["data"], got["c"]["count"]) == ("RUNNING", [None], 0)


def test_an_update_naming_a_row_twice_is_refused(conn):
    insert_rows(conn, _things, ROWS)
    update = BatchUpdate(_things, match=("id",), add=("count",))
    rows = [{"b_id": "a", "d_count": 1}, {"b_id": "a", "d_count": 1}]
    with pytest.raises(ValueError, match="names a row twice"):
        update.run(conn, rows)


def test_a_batch_update_probes_the_key_instead_of_scanning_the_table(postgres_url):
    """A batch of 16 rows in a table of 20,000 finds them through the primary key.

    PostgreSQL guesses 100 rows for any `json_to_recordset`: a join on it alone planned
    as a scan of every row of a table up to about 100,000 rows, once per claim and
    per report (a third of PostgreSQL's CPU in a drain).
    """
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    _meta.create_all(engine)
    try:
        with engine.begin() as conn:
            rows = [{**ROWS[0], "id": f"row-{i:05d}"} for i in range(20_000)]
            insert_rows(conn, _things, rows)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE batch_things")
            update = BatchUpdate(_things, match=("id",), write=("status",))
            batch = [
                {"b_id": f"row-{i:05d}", "v_status": "RUNNING"} for i in range(0, 20_000, 1250)
            ]
            plan = conn.execute(
                text(f"EXPLAIN (FORMAT JSON) {update.sql()}"), {"rows": update.document(batch)}
            ).scalar_one()
            scans = {
                (node["Node Type"], node.get("Index Name"))
                for node in _nodes(plan[0]["Plan"])
                if node.get("Relation Name") == "batch_things"
            }
            assert ("Seq Scan", None) not in scans, scans
            assert any(name == "batch_things_pkey" for _, name in scans), scans
            update.run(conn, batch)
            assert conn.execute(
                select(func.count()).where(_things.c.status == "RUNNING")
            ).scalar_one() == len(batch)
    finally:
        engine.dispose()


def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_rows_written_through_sqlites_driver_get_the_defaults_they_leave_out(tmp_path):
    meta = MetaData()
    scalar = Table(
        "scalar_defaults",
        meta,
        Column("id", String(8), primary_key=True),
        Column("count", Integer, nullable=False, default=7),
        Column("data", t.Json),
    )
    # A default computed per row: only SQLAlchemy's insert computes it.
    computed = Table(
        "computed_defaults",
        meta,
        Column("id", String(8), primary_key=True),
        Column("made", Integer, nullable=False, default=lambda: 42),
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'defaults.db'}")
    meta.create_all(engine)
    with engine.begin() as conn:
        insert_rows(conn, scalar, [{"id": "a", "data": None}, {"id": "b", "data": {"k": "é"}}])
        insert_rows(conn, computed, [{"id": "a"}, {"id": "b"}])
        got = [tuple(r) for r in conn.execute(select(scalar).order_by(scalar.c.id))]
        made = [tuple(r) for r in conn.execute(select(computed).order_by(computed.c.id))]
        stored = (
            conn.exec_driver_sql("SELECT data FROM scalar_defaults ORDER BY id").scalars().all()
        )
    engine.dispose()
    assert got == [("a", 7, None), ("b", 7, {"k": "é"})]
    assert made == [("a", 42), ("b", 42)]
    assert stored[0] == "null"  # JSON null, not SQL NULL: as SQLAlchemy's type stores None
    assert json.loads(stored[1]) == {"k": "é"}
