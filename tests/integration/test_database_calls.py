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


def test_a_single_statement_runs_on_a_pool_in_autocommit_and_costs_one_round_trip(pg_store):
    store = pg_store
    with store.read_one() as conn:
        conn.execute(text("SELECT 1")).scalar_one()  # the connection was just in use
    main = {p.name: p for p in store.pool_stats()}["main"]
    before = store.database_calls()
    with store.read_one() as conn:
        assert conn.connection.driver_connection.autocommit
        conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    # No BEGIN, no COMMIT, no ROLLBACK: the statement alone.
    assert (after.statements - before.statements, after.round_trips - before.round_trips) == (1, 1)
    pools = {p.name: p for p in store.pool_stats()}
    assert pools["single"].idle >= 1 and pools["single"].in_use == 0
    assert (pools["main"].idle, pools["main"].in_use) == (main.idle, main.in_use)
    with store.read() as conn:  # the main pool's connections still begin transactions
        assert not conn.connection.driver_connection.autocommit
    with store.write_one() as tx:
        assert tx.conn.connection.driver_connection.autocommit


def test_the_writer_engine_of_sqlite_is_counted_too(store):
    before = store.database_calls()
    with store.write() as tx:
        tx.conn.execute(text("SELECT 1")).scalar_one()
    after = store.database_calls()
    assert after.statements - before.statements >= 1
    assert after.round_trips - before.round_trips > after.statements - before.statements


def _write_calls(store, history: int = 0, keys: tuple[str, ...] = ()) -> tuple[int, int]:
    """(statements, round trips) of a write transaction that runs `SELECT 1`."""
    before = store.database_calls()
    with store.write() as tx:
        tx.conn.execute(text("SELECT 1")).scalar_one()
        for i in range(history):
            tx.history(f"op_{i}", "QUEUED", "made by the test")
        tx.event("prj_test", "operation.status", "op_0", {"status": "QUEUED"})
        tx.keys.update(keys)
    after = store.database_calls()
    return after.statements - before.statements, after.round_trips - before.round_trips


def test_a_write_reads_the_database_clock_once_a_second_not_each_time(pg_store, monkeypatch):
    store = pg_store
    _write_calls(store)  # the first write reads the clock
    # SELECT 1 and the end of the transaction (its history, events and NOTIFY in one).
    assert _write_calls(store)[0] == 2
    store._clock.resync = 0.0  # a reading is due at every transaction
    assert _write_calls(store)[0] == 3


def test_a_write_ends_with_its_history_events_and_notify_in_one_statement(pg_store):
    store = pg_store
    _write_calls(store)
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {postgres.CHANNEL}")
        statements, _ = _write_calls(store, history=3, keys=("op:op_0", "work:prj_test"))
        heard = {n.payload.split(" ", 1)[1] for n in listener.notifies(timeout=1, stop_after=3)}
    assert statements == 2  # SELECT 1, then everything the transaction buffered
    assert heard == {"op:op_0", "work:prj_test", "events:prj_test"}
    with store.read() as conn:
        rows = conn.execute(text("SELECT entity_id, status FROM status_history ORDER BY seq")).all()
        events = conn.execute(text("SELECT type, entity_id, data FROM events")).all()
    assert [tuple(r) for r in rows[-3:]] == [(f"op_{i}", "QUEUED") for i in range(3)]
    assert tuple(events[-1]) == ("operation.status", "op_0", {"status": "QUEUED"})


def test_the_carried_clock_stays_on_the_database_clock(pg_store):
    store = pg_store
    store.now()
    with store.read() as conn:
        database = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
    assert abs(store.now() - float(database)) < 0.05


def test_a_pipelined_bulk_that_waits_out_its_lock_timeout_is_an_outage_not_a_bug(
    postgres_url,
):
    """psycopg's pipeline raises its own errors; the store raises SQLAlchemy's, as for any
    other statement, so that its edge tells an outage (503) from a bug (500)."""
    from oprun.domain.errors import Unavailable
    from oprun.domain.models import ActionDefinition
    from oprun.store.creation_pg import CHUNK
    from tests.integration._invocations import invoke

    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]
        admin.execute(f'ALTER DATABASE "{name}" SET lock_timeout = 200')  # ms, new sessions
    store = open_store(postgres_url)
    try:
        project = store.create_project("p")
        action, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
        invoke(store, action, 1)  # the queue known: a large bulk is pipelined
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(Unavailable) as raised:
                invoke(store, action, 2 * CHUNK + 1)
            holder.rollback()
        assert raised.value.details["reason"] == "busy"
        assert len(invoke(store, action, 2 * CHUNK + 1)) == 2 * CHUNK + 1
        assert len(store.list_operations(project.id, limit=1000)) == 2 * CHUNK + 2
    finally:
        store.close()
