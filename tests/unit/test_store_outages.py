"""Which database errors are outages (503, retry) and which are not (a bug stays a 500)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa

from oprun.domain.errors import Unavailable
from oprun.store.outages import outage, unavailable_on_outage


def _wrapped(cls: type[sa.DBAPIError], orig: Exception) -> sa.DBAPIError:
    return cls("INSERT INTO t VALUES (?)", {"secret": "value"}, orig)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_wrapped(sa.OperationalError, sqlite3.OperationalError("database is locked")), "busy"),
        (
            _wrapped(sa.OperationalError, sqlite3.OperationalError("database or disk is full")),
            "full",
        ),
        (
            _wrapped(sa.OperationalError, sqlite3.OperationalError("unable to open database file")),
            "unreachable",
        ),
        (_wrapped(sa.OperationalError, sqlite3.OperationalError("no such table: t")), None),
        (
            _wrapped(sa.OperationalError, sqlite3.OperationalError('near "SELEC": syntax error')),
            None,
        ),
        (_wrapped(sa.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")), None),
        (
            _wrapped(sa.OperationalError, psycopg.OperationalError("connection refused")),
            "unreachable",
        ),
        (
            _wrapped(sa.InterfaceError, psycopg.InterfaceError("the connection is closed")),
            "unreachable",
        ),
        (_wrapped(sa.OperationalError, psycopg.errors.LockNotAvailable()), "busy"),
        (_wrapped(sa.OperationalError, psycopg.errors.SerializationFailure()), "busy"),
        (_wrapped(sa.OperationalError, psycopg.errors.DiskFull()), "full"),
        (_wrapped(sa.IntegrityError, psycopg.errors.UniqueViolation()), None),
        (_wrapped(sa.ProgrammingError, psycopg.errors.UndefinedTable()), None),
        (sa.TimeoutError("QueuePool limit of size 10 overflow 20 reached"), "busy"),
        (ValueError("not a database error"), None),
    ],
)
def test_an_outage_is_told_from_a_bug(error: Exception, reason: str | None) -> None:
    assert outage(error) == reason


def test_an_outage_becomes_unavailable_with_a_retry_delay_and_one_line_without_values(caplog):
    with pytest.raises(Unavailable) as raised, unavailable_on_outage():
        raise _wrapped(sa.OperationalError, sqlite3.OperationalError("database is locked"))
    assert raised.value.http_status == 503
    assert raised.value.details == {"reason": "busy", "retry_after": 1}
    (record,) = caplog.records
    assert "event=database_unavailable reason=busy" in record.getMessage()
    assert "value" not in record.getMessage() and "INSERT" not in record.getMessage()


def test_what_is_not_an_outage_passes_through_unchanged():
    error = _wrapped(sa.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed"))
    with pytest.raises(sa.IntegrityError) as raised, unavailable_on_outage():
        raise error
    assert raised.value is error
