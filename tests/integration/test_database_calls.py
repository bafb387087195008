"""The store counts the statements and round trips it sends the database (for /metrics)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from oprun.store import open_store, postgres


@pytest.fixture
def pg_store(postgres_url):
    """A PostgreSQL store: only it pools connections that can die while they rest."""
    s = open_store(postgres_url)
    yield s
    s.close()


def test_a_read_counts_its_statements_and_round_trips(store):
    with store.read() as conn:
        conn.execute(text("SELECT 1")).scalar_one()  # the connection was just in use
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
        # psycopg sends BEGIN itself; a connection that did not rest is not pinged.
        assert (statements, round_trips) == (1, 3)


def test_a_connection_that_rested_is_pinged_first(pg_store, monkeypatch):
    store = pg_store
    monkeypatch.setattr(postgres, "PING_AFTER_REST", 0.0)
    before = store.database_calls()
    with store.read() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    assert after.round_trips - before.round_trips == 4  # the ping, BEGIN, SELECT, COMMIT


def test_a_rested_connection_that_died_is_replaced_before_any_work(pg_store, monkeypatch):
    store = pg_store
    with store.read() as conn:
        victim = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone() == (True,)
    monkeypatch.setattr(postgres, "PING_AFTER_REST", 0.0)  # as if it had rested a while
    with store.read() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != victim


def test_the_writer_engine_of_sqlite_is_counted_too(store):
    before = store.database_calls()
    with store.write() as tx:
        tx.conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    assert after.statements - before.statements >= 1
    assert after.round_trips - before.round_trips > after.statements - before.statements
