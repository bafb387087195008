"""The Alembic migrations build exactly the schema in `oprun.store.schema`, on each backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from oprun.store.migrate import sqlalchemy_url, upgrade
from oprun.store.schema import metadata


def _engine(url: str):
    return create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)


def test_migrations_on_an_empty_database_equal_the_schema(database_url):
    upgrade(database_url)
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "render_as_batch": conn.dialect.name == "sqlite"},
            )
            diff = compare_metadata(context, metadata)
            assert diff == [], f"the migrations differ from schema.py: {diff}"
            assert context.get_current_revision() == "0012"
    finally:
        engine.dispose()


def test_partial_indexes_keep_their_predicates(database_url):
    """`compare_metadata` ignores an index's WHERE: check the partial ones by hand."""
    upgrade(database_url)
    engine = _engine(database_url)
    tables = ("tasks", "operations", "session_actions", "events")
    try:
        with engine.connect() as conn:
            found = {ix["name"]: ix for table in tables for ix in inspect(conn).get_indexes(table)}
            dialect = conn.dialect.name
    finally:
        engine.dispose()
    for index in [ix for table in tables for ix in metadata.tables[table].indexes]:
        expected = index.dialect_options[dialect]["where"]
        if expected is None:
            continue
        options = found[index.name].get("dialect_options", {})
        actual = options.get(f"{dialect}_where")
        assert actual is not None, f"{index.name} lost its WHERE on {dialect}"
        words = "".join(str(expected).lower().split()).replace("'", "")
        got = "".join(str(actual).lower().split()).replace("'", "").replace("::text", "")
        for term in ("queued", "succeeded", "status", "ended_at", "deadline_at", "isnull"):
            if term in words:
                assert term in got, f"{index.name} on {dialect}: {actual!r} vs {expected!r}"


def test_downgrade_to_the_first_revision_and_back(database_url):
    from alembic import command

    from oprun.store.migrate import alembic_config

    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "0001")
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            names = {ix["name"] for ix in inspect(conn).get_indexes("tasks")}
    finally:
        engine.dispose()
    assert "ix_tasks_queue_active_available" not in names and "ix_tasks_claimable" in names
    upgrade(database_url)
