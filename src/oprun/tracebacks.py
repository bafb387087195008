"""Tracebacks fit for a log: a database error's message without the values it quotes.

The engines hide bound parameters (`hide_parameters=True`), but a driver's own
message may still quote data: PostgreSQL's DETAIL (`Key (secret_hash)=(...) already
exists`, `Failing row contains (...)`), its CONTEXT, or a primary message such as
`invalid input syntax for type integer: "..."`. `format_exception` writes a traceback
as `traceback.format_exception` does, except that each database error in the chain
(SQLAlchemy, psycopg, sqlite3) is described by what cannot hold a value: its class,
SQLSTATE, the primary message with quoted values replaced, the names of the table,
column and constraint, and the SQL statement (which carries placeholders, not values).
"""

from __future__ import annotations

import re
import traceback
from types import TracebackType
from typing import Any

REDACTED = '"[value]"'
_DATABASE_MODULES = ("sqlalchemy", "psycopg", "sqlite3")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_NAMES = frozenset(
    [
        "relation",
        "column",
        "constraint",
        "table",
        "index",
        "database",
        "schema",
        "role",
        "user",
        "type",
        "trigger",
        "sequence",
        "view",
        "function",
        "operator",
        "extension",
        "collation",
        "domain",
        "cursor",
        "savepoint",
        "statement",
        "tablespace",
        "channel",
    ]
)
"""Words after which PostgreSQL quotes an identifier, not a value."""
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
"""What `sys.exc_info()` returns, and a log record's `exc_info`."""


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` comes from the database layer (SQLAlchemy, psycopg, sqlite3)."""
    return any(
        cls.__module__.split(".")[0].startswith(_DATABASE_MODULES) for cls in type(exc).__mro__
    )


def _unquote_values(message: str) -> str:
    def keep_names(match: re.Match[str]) -> str:
        before = message[: match.start()].split()
        return match.group() if before and before[-1].lower() in _NAMES else REDACTED

    return _QUOTED.sub(keep_names, message)


def _psycopg_message(exc: Any) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:  # a client-side error (connection, protocol): its first line
        primary = (str(exc).strip().splitlines() or [""])[0]
    parts = [_unquote_values(str(primary))]
    state = getattr(exc, "sqlstate", None)
    if state:
        parts.append(f"SQLSTATE {state}")
    for name in ("table_name", "column_name", "constraint_name"):
        value = getattr(diag, name, None)
        if value:
            parts.append(f"{name.removesuffix('_name')} {value}")
    return "; ".join(parts)


def safe_message(exc: BaseException) -> str:
    """What a log may say about `exc`: for a database error, nothing that holds a value."""
    if not is_database_error(exc):
        return str(exc)
    module = type(exc).__module__
    orig = getattr(exc, "orig", None)
    statement = getattr(exc, "statement", None)
    if module.startswith("sqlalchemy") and isinstance(orig, BaseException):
        text = f"({_qualified(type(orig))}) {safe_message(orig)}"
        if statement:
            text += f"\n[SQL: {statement}]"
        return text
    if module.startswith("psycopg"):
        return _psycopg_message(exc)
    # sqlite3 messages name tables, columns and constraints, never bound values; other
    # SQLAlchemy errors may quote a URL (ArgumentError): its password goes.
    return _URL_PASSWORD.sub(r"\1***@", str(exc))


def _qualified(cls: type[BaseException]) -> str:
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )


def _chain(exc: BaseException) -> list[tuple[BaseException, str | None]]:
    """`exc` and the exceptions behind it, newest first, each with how it led to the next."""
    found: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    return found


def format_exception(exc_info: ExcInfo) -> str:
    """The traceback of `exc_info` as `traceback.format_exception` writes it, made safe."""
    exc = exc_info[1]
    if exc is None:
        return ""
    chain = _chain(exc)
    if not any(is_database_error(e) for e, _ in chain):
        return "".join(traceback.format_exception(exc))
    out: list[str] = []
    for error, link in reversed(chain):
        if error.__traceback__ is not None:
            out.append("Traceback (most recent call last):\n")
            out.extend(traceback.format_tb(error.__traceback__))
        if is_database_error(error):
            out.append(f"{_qualified(type(error))}: {safe_message(error)}\n")
        else:
            out.extend(traceback.format_exception_only(type(error), error))
        if link:
            out.append(link)
    return "".join(out)
