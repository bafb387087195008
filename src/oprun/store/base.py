"""What every store query shares: the engine, transactions, the clock, wake-ups, rows."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from oprun.domain.audit import AuditEntry
from oprun.store import schema as t
from oprun.store.batch import BatchUpdate, Deferred
from oprun.store.calls import CallCounter, count_calls
from oprun.store.migrate import current_revision
from oprun.store.notify import Notifier, events_key
from oprun.store.outages import unavailable_on_outage


def to_datetime(epoch: float | None) -> datetime | None:
    """Epoch seconds from a row as an aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def at(epoch: float) -> datetime:
    """Epoch seconds (never NULL) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)


def insert_new(
    conn: Connection, table: Table, values: Mapping[str, Any], *key: Column[Any]
) -> bool:
    """Insert a row unless one with the same `key` exists; whether this inserted it.

    `INSERT ... ON CONFLICT DO NOTHING` on both backends: a get-or-create racing
    another one ends with one row and no unique violation (on PostgreSQL, the loser
    waits for the winner's commit, then finds its row).
    """
    # RETURNING says whether a row went in: an INSERT's rowcount is -1 under psycopg.
    names = [column.name for column in key]
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=names)
        return conn.execute(pg.returning(*key)).first() is not None
    lite = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=names)
    return conn.execute(lite.returning(*key)).first() is not None


def audit_row(entry: AuditEntry, now: float) -> dict[str, Any]:
    """The `audit_log` row of an entry recorded at `now`."""
    return {
        "at": now,
        "project_id": entry.project_id,
        "kind": entry.kind.value,
        "actor_id": entry.actor_id,
        "actor_name": entry.actor_name,
        "actor_role": None if entry.actor_role is None else entry.actor_role.value,
        "client": entry.client,
        "request_id": entry.request_id,
        "subject": entry.subject,
        "details": entry.details,
    }


@dataclass
class Tx:
    """One write transaction: its connection, its instant, and what it will publish."""

    conn: Connection
    now: float
    keys: set[str] = field(default_factory=set)
    notified: set[str] = field(default_factory=set)
    """Keys a statement of this transaction sent itself (NOTIFY); published here on commit."""
    started: set[str] = field(default_factory=set)
    """Operations whose work started in this transaction (their history shows RUNNING)."""
    _later: list[Deferred] = field(default_factory=list)
    _history: list[dict[str, Any]] = field(default_factory=list)
    _events: list[dict[str, Any]] = field(default_factory=list)
    _audit: list[dict[str, Any]] = field(default_factory=list)

    def history(self, entity_id: str, status: str, detail: str | None = None) -> None:
        """Record a status change of `entity_id` (written before commit)."""
        self._history.append(
            {"entity_id": entity_id, "status": status, "detail": detail, "at": self.now}
        )

    def event(self, project_id: str, type_: str, entity_id: str, data: Mapping[str, Any]) -> None:
        """Record an event for the project's stream (written before commit)."""
        self._events.append(
            {
                "project_id": project_id,
                "type": type_,
                "entity_id": entity_id,
                "data": dict(data),
                "at": self.now,
            }
        )
        self.keys.add(events_key(project_id))

    def audit(self, entry: AuditEntry | None) -> None:
        """Record an audit log row with this transaction (None: nothing to record)."""
        if entry is not None:
            self._audit.append(audit_row(entry, self.now))

    def later(self, target: Table | BatchUpdate, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert `rows` into a table, or apply a batch update, at the end of the transaction.

        Only for writes nothing in the transaction reads back, of rows no other write
        at its end touches (`Deferred`): on PostgreSQL they go with the history, events
        and NOTIFY in one statement.
        """
        if rows:
            self._later.append(Deferred(target, rows))

    def take_writes(self) -> list[Deferred]:
        """The held-back writes, then the buffered history, events and audit rows."""
        taken = self._later + [
            Deferred(table, rows)
            for table, rows in (
                (t.status_history, self._history),
                (t.events, self._events),
                (t.audit_log, self._audit),
            )
            if rows
        ]
        self._later, self._history, self._events, self._audit = [], [], [], []
        return taken

    def flush(self) -> None:
        """Write what was held back and buffered, a statement per table (or batch update)."""
        for write in self.take_writes():
            write.run(self.conn)


class StoreBase:
    """Transactions and wake-ups over SQLAlchemy engines; backends override the hooks."""

    dialect_name = "sql"

    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine = engine
        self.notifier = notifier
        self.calls = CallCounter()
        count_calls(engine, self.calls, driver_begins=engine.dialect.name == "postgresql")
        self.engines: dict[str, Engine] = {"main": engine}
        """Every engine of the store by the name its pool shows in `/metrics`."""

    # -- hooks for backends ------------------------------------------------------------
    def _db_now(self, conn: Connection) -> float:
        """The transaction's instant: the database's clock where it has one."""
        return time.time()

    def _begin_write(self) -> Connection:
        return self.engine.connect()

    def _close(self, tx: Tx) -> None:
        """Write what the transaction buffered, just before commit.

        PostgreSQL's sends the NOTIFY of the keys here too (delivered at commit).
        """
        tx.flush()

    def _after_commit(self, keys: set[str]) -> None:
        """Publish in this process after commit (other processes hear the NOTIFY)."""
        if keys:
            self.notifier.publish(keys)

    # -- transactions ------------------------------------------------------------------
    # Every query runs in one of these three: each turns a database outage into
    # Unavailable (503), so no caller sees a driver's exception.
    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction; its history, events and wake-ups land with its commit."""
        with unavailable_on_outage(), self._begin_write() as conn, conn.begin():
            tx = Tx(conn, self._db_now(conn))
            yield tx
            self._close(tx)
        self._after_commit(tx.keys | tx.notified)

    @contextmanager
    def write_one(self) -> Iterator[Tx]:
        """A write of a single statement that does all of its writing and publishing.

        Such a statement is atomic by itself: PostgreSQL's runs outside a transaction
        (no BEGIN and COMMIT round trips). Nothing may be buffered in its `Tx` (history,
        events, keys): only `Tx.notified`, what the statement sent itself.
        """
        with self.write() as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with unavailable_on_outage(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """A read of a single statement, which is a snapshot of its own.

        PostgreSQL's runs outside a transaction: no BEGIN and COMMIT round trips.
        """
        with self.read() as conn:
            yield conn

    def now(self) -> float:
        """The store's clock, for timeouts and ages."""
        with unavailable_on_outage(), self.engine.connect() as conn:
            return self._db_now(conn)

    def schema_revision(self) -> str | None:
        """The database's schema revision (None when it was never migrated)."""
        with self.read() as conn:
            return current_revision(conn)

    def close(self) -> None:
        """Release connections and listeners."""
        self.notifier.close()
        for engine in self.engines.values():
            engine.dispose()
