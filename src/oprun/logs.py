"""Logging for `oprun server`, `oprun up` and `oprun worker`: one setup, two formats.

Readable lines by default (time, level, logger, message, then ``key=value``
fields), JSON lines with ``--log-format json`` (``OPRUN_LOG_FORMAT=json``): one
object per line with ``time``, ``level``, ``logger``, ``message`` and the fields.

A request's lines carry its context: the API's middleware binds a
`RequestContext` (request id; the caller's project once authenticated; the
operation and worker ids its route names) for the duration of the request, and
every line logged meanwhile, in any thread the request uses, carries it. A record
adds fields of its own with ``extra={"fields": {...}}``.

Tokens never reach a log line: nothing logs headers, and as a backstop every line
has ``Bearer <secret>`` and anything shaped like an oprun token secret replaced.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from oprun.tracebacks import ExcInfo, format_exception

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "LogFormat",
    "RequestContext",
    "TextFormatter",
    "bound_request",
    "configure",
    "current_request",
    "redact",
]

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
ACCESS_LOGGER = "oprun.access"
"""The logger of the API's access log: one line per request."""

_CONTEXT_PATH_PARAMS = ("operation_id", "worker_id", "session_action_id")
"""Path parameters of a request that its log lines carry."""
_SECRET = re.compile(
    r"(?i:(?<=bearer )|(?<=bearer%20))[^\s\"',;]+"
    r"|oprun_(?=[A-Za-z0-9_-]*[A-Z0-9])[A-Za-z0-9_-]{32,}"
)
"""A bearer credential, or an oprun token secret (`oprun_` and 43 random characters)."""
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with bearer credentials and oprun token secrets replaced.

    A line with neither word (most of them) is answered without the pattern, whose
    look-behinds are tried at every position: 30 µs of an access line's 50 here.
    """
    if "oprun_" not in text and "bearer" not in text.lower():
        return text
    return _SECRET.sub(REDACTED, text)


@dataclass
class RequestContext:
    """What every log line of one API request carries.

    Mutable on purpose: the request's code runs in tasks and threads that hold a copy
    of the context variable, and they all see (and fill in) this one object.
    """

    request_id: str
    project_id: str | None = None
    scope: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The request's ASGI scope, where the router puts the route's parameters once it
    has routed the request (after this context was bound)."""

    def fields(self) -> dict[str, str]:
        """The context as log fields."""
        found = {"request_id": self.request_id}
        if self.project_id:
            found["project_id"] = self.project_id
        params = self.scope.get("path_params")
        if isinstance(params, Mapping):
            for name in _CONTEXT_PATH_PARAMS:
                value = params.get(name)
                if isinstance(value, str) and value:
                    found[name] = value
        return found


_request: ContextVar[RequestContext | None] = ContextVar("oprun_request", default=None)


def current_request() -> RequestContext | None:
    """The context of the request being served here, if any."""
    return _request.get()


@contextmanager
def bound_request(context: RequestContext) -> Iterator[RequestContext]:
    """Make `context` the current request's for the duration of the block."""
    token = _request.set(context)
    try:
        yield context
    finally:
        _request.reset(token)


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    context = _request.get()
    if context is not None:
        found.update(context.fields())
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        found.update(extra)
    return found


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``2025-01-02T03:04:05.678Z INFO oprun.access request method=GET status=200 ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """One readable line (a traceback, if any, on the lines after it)."""
        parts = [_time(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_value(v)}" for k, v in _record_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info).rstrip()
        return redact(line)

    def formatException(self, ei: ExcInfo) -> str:
        """The traceback, a database error's quoted values left out (`oprun.tracebacks`)."""
        return format_exception(ei)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context and fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON."""
        body: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            body.setdefault(key, value)
        if record.exc_info:
            body["exception"] = format_exception(record.exc_info).rstrip()
        return redact(json.dumps(body, default=str, ensure_ascii=False))


_HANDLER_NAME = "oprun"


def configure(
    log_format: LogFormat = "text",
    *,
    verbose: bool = False,
    access_log: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Send every log line to stderr (or `stream`) in `log_format`; safe to call again.

    Args:
        log_format: ``text`` (readable) or ``json`` (one object per line).
        verbose: log at INFO; WARNING otherwise.
        access_log: write the API's access log (one INFO line per request) even when
            not verbose.
        stream: where lines go; stderr by default.

    Raises:
        ValueError: `log_format` is neither ``text`` nor ``json``.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.INFO if verbose or access_log else logging.WARNING
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print in their own format: ours print its lines.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
