"""The SDK's errors: the domain's error tree, plus what only a client can run into.

    OprunError                  (oprun.domain.errors: one class per API error code)
    └── OperationFailed         wait_until_done() saw a status listed in `raise_on`

A call that never got an answer raises `Unavailable`, naming the server's URL.
`wait()` past its timeout raises the built-in `TimeoutError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from oprun.domain.errors import (
    ERRORS_BY_CODE,
    AccessDenied,
    AuthenticationError,
    Conflict,
    NotFound,
    OprunError,
    ServerError,
    Throttled,
    TooLarge,
    Unavailable,
    ValidationError,
)

if TYPE_CHECKING:
    from oprun.sdk._snapshot import OperationSnapshot

__all__ = [
    "ERRORS_BY_CODE",
    "AccessDenied",
    "AuthenticationError",
    "Conflict",
    "NotFound",
    "OperationFailed",
    "OprunError",
    "ServerError",
    "Throttled",
    "TooLarge",
    "Unavailable",
    "ValidationError",
]


class OperationFailed(OprunError):
    """The operation ended in a status the caller asked to treat as an error.

    `operation` is the resolved snapshot (an `Operation` or `AsyncOperation`):
    its `status`, `error` and `history` say what happened.
    """

    code: ClassVar[str] = "OPERATION_FAILED"

    def __init__(self, operation: OperationSnapshot) -> None:
        self.operation = operation
        message = f"operation {operation.id} ({operation.kind}) ended {operation.state}"
        if operation.error is not None:
            message += f": {operation.error.code}: {operation.error.message}"
        super().__init__(message, operation_id=operation.id, status=operation.state)
