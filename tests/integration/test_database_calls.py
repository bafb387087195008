"""The store counts the statements and round trips it sends the database (for /metrics)."""

from __future__ import annotations

from sqlalchemy import text


def test_a_read_counts_its_statements_and_round_trips(store):
    before = store.database_calls()
    with store.read() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    statements = after.statements - before.statements
    round_trips = after.round_trips - before.round_trips
    if store.dialect_name == "sqlite":
        # BEGIN is a statement we send; COMMIT is the transaction's end.
        assert (statements, round_trips) == (2, 3)
    else:
        # psycopg sends BEGIN itself; the pool pings the connection it hands out.
        assert (statements, round_trips) == (1, 4)


def test_the_writer_engine_of_sqlite_is_counted_too(store):
    before = store.database_calls()
    with store.write() as tx:
        tx.conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    assert after.statements - before.statements >= 1
    assert after.round_trips - before.round_trips > after.statements - before.statements
