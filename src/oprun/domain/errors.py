"""The one error tree of oprun, shared by the server, the SDK and the CLI.

    OprunError
    ├── ValidationError      400 VALIDATION
    ├── AuthenticationError  401 UNAUTHENTICATED
    ├── AccessDenied         403 ACCESS_DENIED
    ├── NotFound             404 NOT_FOUND
    │   └── MethodNotAllowed 405 METHOD_NOT_ALLOWED
    ├── Conflict             409 CONFLICT
    ├── TooLarge             413 TOO_LARGE
    ├── Throttled            429 THROTTLED
    ├── ServerError          500 INTERNAL
    └── Unavailable          503 UNAVAILABLE

Each class's docstring is its default message. `ERRORS_BY_CODE` is the one table
that maps codes to classes; the API renders `code`/`http_status`, the SDK maps
an error body back to the same class.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OprunError(Exception):
    """Something went wrong."""

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        """The error as the wire shape ``{"error": {code, message, details}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationError(OprunError):
    """The request is not valid."""

    code = "VALIDATION"
    http_status = 400


class AuthenticationError(OprunError):
    """A valid API token is required."""

    code = "UNAUTHENTICATED"
    http_status = 401


class AccessDenied(OprunError):
    """Your token's role does not allow this."""

    code = "ACCESS_DENIED"
    http_status = 403


class NotFound(OprunError):
    """No such resource."""

    code = "NOT_FOUND"
    http_status = 404


class MethodNotAllowed(NotFound):
    """The resource does not answer this method (the `Allow` header names those it does)."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405


class Conflict(OprunError):
    """The resource is not in a state that allows this."""

    code = "CONFLICT"
    http_status = 409


class TooLarge(OprunError):
    """The request is larger than allowed."""

    code = "TOO_LARGE"
    http_status = 413


class Throttled(OprunError):
    """Too many requests; retry later."""

    code = "THROTTLED"
    http_status = 429


class ServerError(OprunError):
    """The server failed to handle the request."""

    code = "INTERNAL"
    http_status = 500


class Unavailable(OprunError):
    """The service is unavailable; retry later."""

    code = "UNAVAILABLE"
    http_status = 503


ERRORS_BY_CODE: dict[str, type[OprunError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        AuthenticationError,
        AccessDenied,
        NotFound,
        MethodNotAllowed,
        Conflict,
        TooLarge,
        Throttled,
        ServerError,
        Unavailable,
    )
}


def error_from_body(status: int, body: Any) -> OprunError:
    """Rebuild the typed error from an HTTP status and an error body."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("code") in ERRORS_BY_CODE:
        cls = ERRORS_BY_CODE[err["code"]]
        return cls(str(err.get("message") or ""), **(err.get("details") or {}))
    by_status = {c.http_status: c for c in ERRORS_BY_CODE.values()}
    cls = by_status.get(status, ServerError if status >= 500 else ValidationError)
    return cls(f"HTTP {status}")
