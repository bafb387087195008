"""The embedded backend: one SQLite file in WAL mode (a new one made with mode 0600).

Writers take the database lock up front (`BEGIN IMMEDIATE`), so a claim can never
be overtaken between its read and its update; readers use their own connections
and never block on writers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from oprun.domain.text import read_json
from oprun.store.batch import encode_json
from oprun.store.calls import count_calls
from oprun.store.files import create_private_database
from oprun.store.notify import Notifier
from oprun.store.sql import SqlStore

BUSY_TIMEOUT = 30.0
"""Seconds a writer waits for the database lock before it gives up (503, busy): the
URL's `?timeout=` when it has one."""


def _engine(url: str, begin: str) -> Engine:
    timeout = float(str(make_url(url).query.get("timeout", BUSY_TIMEOUT)))
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=8,
        max_overflow=8,
        # Last in, first out: the few connections a load needs stay warm; each pooled
        # connection keeps a page cache of its own, filled only if the pool rotates.
        pool_use_lifo=True,
        connect_args={"check_same_thread": False, "timeout": timeout},
        hide_parameters=True,
        json_serializer=encode_json,
        json_deserializer=read_json,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


class SqliteStore(SqlStore):
    """Store on a SQLite file; wake-ups stay in this process."""

    dialect_name = "sqlite"
    serial_writes = True

    def __init__(self, url: str) -> None:
        create_private_database(url)  # a new database file: readable by its owner alone
        super().__init__(_engine(url, "BEGIN"), Notifier())
        self._writer = self.engines["writer"] = _engine(url, "BEGIN IMMEDIATE")
        count_calls(self._writer, self.calls, driver_begins=False)

    def _begin_write(self) -> Connection:
        return self._writer.connect()
