"""oprun: long-running operations, done once, well, and open.

    import oprun

    client = oprun.Client()                      # OPRUN_URL, OPRUN_TOKEN
    op = client.operations.invoke("resize", {"width": 640})
    op = op.wait_until_done(timeout=600)         # OperationFailed if it FAILED
    print(op.state, op.result)

Errors (`oprun.OprunError` and one subclass per API error code, drawn in
`oprun.domain.errors`) are raised by every call; `wait()` past its timeout raises
the built-in `TimeoutError`.
"""

from oprun._version import __version__
from oprun.app import App
from oprun.context import Cancelled, Context
from oprun.domain.errors import (
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
from oprun.domain.status import OperationStatus, SessionActionStatus
from oprun.sdk import (
    AsyncClient,
    AsyncNoOp,
    AsyncOperation,
    Client,
    NoOp,
    Operation,
    OperationFailed,
)

__all__ = [
    "AccessDenied",
    "App",
    "AsyncClient",
    "AsyncNoOp",
    "AsyncOperation",
    "AuthenticationError",
    "Cancelled",
    "Client",
    "Conflict",
    "Context",
    "NoOp",
    "NotFound",
    "Operation",
    "OperationFailed",
    "OperationStatus",
    "OprunError",
    "ServerError",
    "SessionActionStatus",
    "Throttled",
    "TooLarge",
    "Unavailable",
    "ValidationError",
    "__version__",
]
