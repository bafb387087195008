"""A database that cannot serve right now becomes `Unavailable` (503), at the store's edge.

What counts as an outage: the database cannot be reached or the connection broke
(SQLAlchemy `OperationalError`, `InterfaceError`, a connection invalidated), it is busy
(SQLite "database is locked", PostgreSQL lock or serialization conflicts, the pool
exhausted) or it cannot write (disk full). Anything else (a constraint, a bug in a
query) passes through unchanged: retrying it would not help.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa

from oprun.domain.errors import Unavailable

log = logging.getLogger("oprun.store")

MESSAGES = {
    "unreachable": "the database is not answering; retry later",
    "busy": "the database is busy; retry later",
    "full": "the database cannot write: its disk is full; retry later",
}
"""What a caller reads for each reason an outage has."""

RETRY_AFTER = {"unreachable": 2, "busy": 1, "full": 2}
"""Seconds a caller should wait before it retries, by reason."""

_SQLITE = (
    ("database is locked", "busy"),
    ("database table is locked", "busy"),
    ("disk is full", "full"),
    ("unable to open", "unreachable"),
    ("disk i/o error", "unreachable"),
)
"""SQLite reports every failure as one class: its message says which are outages."""

_PG_BUSY = ("55P03", "57014", "53300")
"""PostgreSQL states of a busy server: lock not available, query canceled (a timeout),
too many connections (and class 40, a transaction rolled back by a conflict)."""


def outage(error: BaseException) -> str | None:
    """Why the database cannot serve right now (`unreachable`, `busy`, `full`), or None.

    None means `error` is no outage: a constraint, a bug, a query the database refused.
    """
    if isinstance(error, sa.TimeoutError):  # no pooled connection came free in time
        return "busy"
    if not isinstance(error, sa.DBAPIError):
        return None
    if isinstance(error.orig, sqlite3.Error):
        text = str(error.orig).lower()
        return next((reason for words, reason in _SQLITE if words in text), None)
    if error.connection_invalidated or isinstance(error, sa.InterfaceError):
        return "unreachable"
    if isinstance(error, sa.OperationalError):
        state = str(getattr(error.orig, "sqlstate", None) or "")
        if state.startswith("40") or state in _PG_BUSY:
            return "busy"
        if state == "53100":
            return "full"
        return "unreachable"
    return None


@contextmanager
def unavailable_on_outage() -> Iterator[None]:
    """Turn an outage raised in the block into `Unavailable`, logged as one line.

    The line names the reason and the driver's first line of message: never a bound
    value (the engines hide parameters too).
    """
    try:
        yield
    except (sa.DBAPIError, sa.TimeoutError) as error:
        reason = outage(error)
        if reason is None:
            raise
        cause = error.orig if isinstance(error, sa.DBAPIError) else error
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        log.warning("event=database_unavailable reason=%s error=%r", reason, first)
        raise Unavailable(
            MESSAGES[reason], reason=reason, retry_after=RETRY_AFTER[reason]
        ) from error
