"""Every error leaves the API in one shape: {"error": {code, message, details}}.

A crash (an exception no handler knows) is answered by `CrashGuard`, a pure ASGI
middleware just inside Starlette's own: it answers 500 and does not re-raise, so the
server keeps the client's keep-alive connection open for its next request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oprun.domain.errors import (
    ERRORS_BY_CODE,
    MethodNotAllowed,
    NotFound,
    OprunError,
    ServerError,
    Throttled,
    Unavailable,
    ValidationError,
)
from oprun.domain.text import escape

log = logging.getLogger("oprun.api")


def error_response(error: OprunError) -> JSONResponse:
    """The JSON response for a domain error."""
    headers = {}
    if isinstance(error, Throttled | Unavailable):
        headers["Retry-After"] = str(error.details.get("retry_after", 1))
    return JSONResponse(error.to_body(), status_code=error.http_status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    # A dict key in the path may be the very text that was refused: answer it escaped.
    parts = [escape(str(p)) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _validation(exc: RequestValidationError) -> ValidationError:
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ValidationError(
            f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}",
            field="body",
        )
    where = _location(tuple(first.get("loc", ())))
    message = escape(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    problems = [
        {"field": _location(tuple(e.get("loc", ()))), "problem": escape(e.get("msg", ""))}
        for e in errors
    ]
    return ValidationError(f"{where}: {message}", field=where, errors=problems)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every known failure into the one error shape.

    Crashes are `CrashGuard`'s: the app adds it after its other middleware.
    """

    @app.exception_handler(OprunError)
    async def _oprun(_: Request, exc: OprunError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            response = error_response(
                MethodNotAllowed(f"{request.url.path} does not answer {request.method}")
            )
            response.headers.update(exc.headers or {})  # Allow
            return response
        by_status = {c.http_status: c for c in ERRORS_BY_CODE.values()}
        cls = by_status.get(exc.status_code, ValidationError)
        error = cls(str(exc.detail))
        response = error_response(error)
        response.status_code = exc.status_code
        return response


class CrashGuard:
    """Answers 500 in the error shape for an exception nothing else handled, and swallows it.

    Starlette's `ServerErrorMiddleware` answers too but then re-raises, and uvicorn
    closes the connection of a request whose app raised: the client's next request
    on that pooled connection would fail. Re-raises only when the response had
    already started (a broken stream must end its connection).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer its crash instead of raising it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("event=unhandled method=%s path=%s", scope.get("method"), scope["path"])
            if started:
                raise
            response = error_response(ServerError("the server failed to handle the request"))
            await response(scope, receive, send)
