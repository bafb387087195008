"""How many calls this process made to its database: statements and round trips.

`count_calls` hangs cheap listeners on an engine (one integer increment per event,
under a lock); `DatabaseCalls` is what they counted, read by the server's metrics
(`oprun_database_statements_total`, `oprun_database_round_trips_total`) and by
benchmarks to say what each operation costs.

A *statement* is one SQL statement SQLAlchemy sent (an executemany counts once per
statement the driver is handed). A *round trip* is one request the process sent
and waited for an answer to: each statement, each transaction's BEGIN (psycopg sends
it before the first statement) and its COMMIT or ROLLBACK, and each ping of a pooled
connection that rested (`postgres.ping_rested`); statements sent in a pipeline and
answered together are one (`creation_pg.PipelinedCreation`). On SQLite, where nothing
crosses a network, round trips are calls into the library: statements (BEGIN is one of
them) and transaction ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["CallCounter", "DatabaseCalls", "count_calls"]


@dataclass(frozen=True)
class DatabaseCalls:
    """Calls to the database since the process opened its store."""

    statements: int
    round_trips: int


class CallCounter:
    """Two thread-safe counters, shared by every engine of one store."""

    def __init__(self) -> None:
        """Start at zero."""
        self._lock = threading.Lock()
        self._statements = 0
        self._other = 0

    def statement(self, *_: Any) -> None:
        """Count one statement (a round trip too)."""
        with self._lock:
            self._statements += 1

    def round_trip(self, *_: Any) -> None:
        """Count one round trip that is not a statement (BEGIN, COMMIT, a ping)."""
        with self._lock:
            self._other += 1

    def pipelined(self, statements: int) -> None:
        """Count `statements` sent one after another and answered together: one round trip."""
        if statements:
            with self._lock:
                self._statements += statements
                self._other -= statements - 1

    def read(self) -> DatabaseCalls:
        """The counts so far."""
        with self._lock:
            return DatabaseCalls(self._statements, self._statements + self._other)


def count_calls(
    engine: Engine, counter: CallCounter, *, driver_begins: bool, autocommit: bool = False
) -> None:
    """Count `engine`'s statements and round trips into `counter`.

    `driver_begins`: the driver sends BEGIN itself (psycopg) rather than as a
    statement we execute (SQLite's `BEGIN IMMEDIATE`, already a statement).
    `autocommit`: every connection of the engine is in autocommit, so it never sends
    BEGIN, COMMIT or ROLLBACK, though SQLAlchemy still fires those events for it.
    """
    event.listen(engine, "before_cursor_execute", counter.statement)
    if engine.pool._pre_ping:  # the ping before each checkout of a pooled connection
        event.listen(engine.pool, "checkout", counter.round_trip)
    if autocommit:
        return
    # Nothing switches a connection of a transactional engine to autocommit (single
    # statements have an engine of their own): each of these events is a round trip.
    event.listen(engine, "commit", counter.round_trip)
    event.listen(engine, "rollback", counter.round_trip)
    if driver_begins:
        event.listen(engine, "begin", counter.round_trip)
