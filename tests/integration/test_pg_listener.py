"""PostgreSQL's listener: keys lost while it was away count as published when it is back."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from sqlalchemy import text

from oprun.store import open_store
from oprun.store.notify import work_key


@pytest.fixture
def pg_store(postgres_url):
    s = open_store(postgres_url)
    yield s
    s.close()


def _listener_pid(store) -> tuple[str, int]:
    with store.read() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        pid = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :name AND query = 'LISTEN oprun'"
            ),
            {"name": name},
        ).scalar_one()
    return store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False), pid


def test_a_listener_that_lost_its_connection_wakes_every_waiter_when_it_is_back(pg_store):
    """A claim parked on a project's work key, or a `:wait`, would otherwise sleep out
    its whole wait on a key published while the listener was away."""
    notifier = pg_store.notifier
    key = work_key("prj_parked")
    before = notifier.generation(key)
    assert notifier.hears_everything
    url, pid = _listener_pid(pg_store)

    async def scene() -> None:
        async with notifier.listen(key) as signal:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # The listener retries after 1 s; nothing publishes the key meanwhile.
            assert await signal.wait(10.0), "no wake-up after the listener came back"

    asyncio.run(scene())
    assert notifier.generation(key) > before
    # It counts itself listening just after the wake-up (never before: see `PgNotifier`).
    deadline = time.monotonic() + 5.0
    while not notifier.hears_everything:
        assert time.monotonic() < deadline, "the listener never came back"
        time.sleep(0.01)
    assert _listener_pid(pg_store)[1] != pid
