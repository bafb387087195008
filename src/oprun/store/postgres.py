"""The scale-out backend: PostgreSQL, shared by any number of API processes.

Claims use `FOR UPDATE SKIP LOCKED` on a partial index of waiting tasks; wake-ups
travel as `NOTIFY oprun, '<process> <key>'` sent inside the writing transaction (so
they are delivered only if it commits): the writing process wakes its own waiters as
it commits, a listener thread in every other process hands them to its waiters.
Times come from the database's clock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from oprun.store.base import Tx
from oprun.store.batch import encode_json
from oprun.store.calls import CallCounter, count_calls
from oprun.store.closing_pg import close_in_one_statement
from oprun.store.db_clock import DatabaseClock
from oprun.store.notify import Notifier, tokens_key
from oprun.store.outages import unavailable_on_outage
from oprun.store.sql import SqlStore

log = logging.getLogger("oprun.store")
CHANNEL = "oprun"


class PgNotifier(Notifier):
    """Local fan-out fed by a thread that LISTENs on the database.

    A key travels as ``<origin> <key>``: the process that sent it published it to its own
    waiters at commit already, so its listener passes it over when it comes back (all
    but `tokens_key()`, whose echo a revocation waits for); other processes publish it.
    """

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self.origin = uuid.uuid4().hex[:12]
        """This process's mark on the keys it sends."""
        self._conninfo = conninfo
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._listening = False
        self._thread = threading.Thread(target=self._listen, name="oprun-pg-listen", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Keys sent while the listener was away are lost: count every key as
                    # published (revoked tokens, work to claim, operations ended) before
                    # trusting caches again, and wake every waiter to look for itself.
                    self.publish_everything()
                    self._listening = True
                    self._ready.set()
                    while not self._stop.is_set():
                        # Hand each key on as it arrives; the timeout only bounds how
                        # long a stop request waits.
                        for notify in conn.notifies(timeout=0.5):
                            self._heard(notify.payload)
            except Exception as exc:  # a listener that died would leave caches trusted
                self._listening = False
                self._ready.set()
                if not self._stop.is_set():
                    log.warning("event=listen_failed error=%r retry_in=1s", str(exc))
                    self._stop.wait(1.0)

    def wire(self, key: str) -> str:
        """`key` marked as this process's."""
        return f"{self.origin} {key}"

    def _heard(self, payload: str) -> None:
        origin, _, key = payload.rpartition(" ")
        if origin != self.origin or key == tokens_key():
            self.publish([key])

    @property
    def hears_everything(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._listening and not self._stop.is_set()

    def close(self) -> None:
        """Stop the listener thread."""
        self._stop.set()
        self._thread.join(timeout=5)


CONNECT_TIMEOUT = 5
"""Seconds a new connection to PostgreSQL may take before the store answers 503."""
PING_AFTER_REST = 1.0
"""Seconds a pooled connection may rest before its next checkout pings it first."""


def ping_rested(engine: Engine, counter: CallCounter) -> None:
    """Ping a pooled connection on checkout when it rested `PING_AFTER_REST` or longer.

    A connection checked in moments ago was alive then: pinging it before every
    transaction (`pool_pre_ping`) costs a round trip each on the hot path. One that
    rested longer may have been cut (a restarted or failed-over database): a failed
    ping makes the pool replace it before any work is sent, as `pool_pre_ping` does.
    A connection cut within its rest fails its first statement instead, and SQLAlchemy
    then drops it and every connection older than the failure (the answer is a 503,
    which clients retry).
    """

    @event.listens_for(engine.pool, "connect")
    @event.listens_for(engine.pool, "checkin")
    def rested(_dbapi: Any, record: Any) -> None:
        record.info["rested_at"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def ping(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("rested_at")
        if since is not None and time.monotonic() - since < PING_AFTER_REST:
            return
        counter.round_trip()
        try:
            engine.dialect.do_ping(dbapi)
        except psycopg.Error as exc:
            raise DisconnectionError(str(exc)) from exc


_CLOCK = text("SELECT extract(epoch FROM clock_timestamp())")


class PostgresStore(SqlStore):
    """Store on PostgreSQL."""

    dialect_name = "postgresql"

    def __init__(self, url: str) -> None:
        sa_url = make_url(url).set(drivername="postgresql+psycopg")
        # A database host that drops packets must not hold a request: a connection that
        # takes longer than this is an outage (503), unless the URL sets its own.
        connect = {} if "connect_timeout" in sa_url.query else {"connect_timeout": CONNECT_TIMEOUT}

        def engine_of(**options: Any) -> Engine:
            return create_engine(
                sa_url,
                # Last in, first out: the same few connections stay warm (and keep their
                # prepared statements) instead of every pooled one taking turns.
                pool_use_lifo=True,
                hide_parameters=True,
                connect_args=connect,
                json_serializer=encode_json,
                **options,
            )

        engine = engine_of(pool_size=10, max_overflow=20)
        conninfo = sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        super().__init__(engine, PgNotifier(conninfo))
        ping_rested(engine, self.calls)
        # Single statements (`read_one`, `write_one`) run on connections of their own,
        # in autocommit from the start: switching a pooled connection to autocommit for
        # one checkout and back cost 140 µs of CPU, more than half of the checkout.
        self._single = self.engines["single"] = engine_of(
            pool_size=5, max_overflow=10, isolation_level="AUTOCOMMIT"
        )
        count_calls(self._single, self.calls, driver_begins=False, autocommit=True)
        ping_rested(self._single, self.calls)
        self._clock = DatabaseClock()

    def _db_now(self, conn: Connection) -> float:
        return self._clock.now(lambda: float(conn.execute(_CLOCK).scalar_one()))

    @contextmanager
    def write_one(self) -> Iterator[Tx]:
        """A single statement outside any transaction (autocommit): no BEGIN, no COMMIT."""
        with unavailable_on_outage(), self._single.connect() as conn:
            tx = Tx(conn, self._db_now(conn))
            yield tx
            if tx.take_writes() or tx.keys:
                raise RuntimeError("a single-statement write buffered rows or keys")
        self._after_commit(tx.notified)

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """A single statement outside any transaction (autocommit): one round trip."""
        with unavailable_on_outage(), self._single.connect() as conn:
            yield conn

    def now(self) -> float:
        """The database's clock, carried forward; a connection only when a reading is due."""
        carried = self._clock.carried()
        return super().now() if carried is None else carried

    def _after_commit(self, keys: set[str]) -> None:
        # tokens_key() is published when its NOTIFY comes back: a revocation waits for that.
        super()._after_commit(keys - {tokens_key()})

    def _close(self, tx: Tx) -> None:
        close_in_one_statement(tx, CHANNEL, map(self.notifier.wire, tx.keys))
