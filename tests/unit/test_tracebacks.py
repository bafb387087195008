"""Tracebacks in logs name what failed in the database, never a value it was given."""

from __future__ import annotations

import sqlite3
import sys

import psycopg
from sqlalchemy import exc as sa

from oprun.tracebacks import format_exception, safe_message

SECRET = "s3cret-4f1c9a"


def _raised(error: BaseException) -> str:
    try:
        raise error from psycopg.errors.UniqueViolation(
            f'duplicate key value violates unique constraint "ix_t"\n'
            f"DETAIL:  Key (secret_hash)=({SECRET}) already exists."
        )
    except BaseException:
        return format_exception(sys.exc_info())


def test_a_database_error_is_logged_without_the_values_it_was_given() -> None:
    error = sa.IntegrityError(
        "INSERT INTO t (secret_hash) VALUES (?)",
        (SECRET,),
        sqlite3.IntegrityError("UNIQUE constraint failed: t.secret_hash"),
    )
    text = _raised(error)
    assert SECRET not in text
    assert "UNIQUE constraint failed: t.secret_hash" in text
    assert "[SQL: INSERT INTO t (secret_hash) VALUES (?)]" in text
    assert 'violates unique constraint "ix_t"' in text and "DETAIL" not in text
    assert "The above exception was the direct cause" in text


def test_quoted_values_go_and_quoted_names_stay() -> None:
    message = 'invalid input syntax for type integer: "12ab"'
    error = psycopg.errors.InvalidTextRepresentation(message)
    assert safe_message(error) == (
        'invalid input syntax for type integer: "[value]"; SQLSTATE 22P02'
    )
    named = psycopg.errors.UndefinedColumn('column "secret" of relation "tokens" does not exist')
    assert safe_message(named).startswith('column "secret" of relation "tokens" does not')
    url = sa.ArgumentError("Could not parse URL from string 'postgresql://me:pw123@db/x'")
    assert "pw123" not in safe_message(url) and "me:***@db" in safe_message(url)


def test_other_errors_are_formatted_as_python_does() -> None:
    try:
        raise ValueError(SECRET)
    except ValueError:
        text = format_exception(sys.exc_info())
    assert text.startswith("Traceback (most recent call last):") and f"ValueError: {SECRET}" in text
