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

from typing import TYPE_CHECKING, Any

from oprun._version import __version__

if TYPE_CHECKING:
    from oprun.app import App
    from oprun.context import Cancelled, Context
    from oprun.domain.errors import (
        AccessDenied,
        AuthenticationError,
        Conflict,
        MethodNotAllowed,
        NotFound,
        OprunError,
        ServerError,
        Throttled,
        TooLarge,
        Unavailable,
        ValidationError,
    )
    from oprun.domain.models import Requirements, RetryPolicy
    from oprun.domain.status import OperationStatus, SessionActionStatus
    from oprun.sdk import (
        AsyncClient,
        AsyncNoOp,
        AsyncOperation,
        Client,
        HttpRetry,
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
    "HttpRetry",
    "MethodNotAllowed",
    "NoOp",
    "NotFound",
    "Operation",
    "OperationFailed",
    "OperationStatus",
    "OprunError",
    "Requirements",
    "RetryPolicy",
    "ServerError",
    "SessionActionStatus",
    "Throttled",
    "TooLarge",
    "Unavailable",
    "ValidationError",
    "__version__",
]


# The public names load on first use: worker child processes import `oprun.worker.*`
# and must not pay for the SDK's HTTP stack (about 0.2 s per process started).
_HOMES = {
    "App": "oprun.app",
    "Cancelled": "oprun.context",
    "Context": "oprun.context",
    "Requirements": "oprun.domain.models",
    "RetryPolicy": "oprun.domain.models",
    "OperationStatus": "oprun.domain.status",
    "SessionActionStatus": "oprun.domain.status",
    **{
        name: "oprun.domain.errors"
        for name in (
            "AccessDenied",
            "AuthenticationError",
            "Conflict",
            "MethodNotAllowed",
            "NotFound",
            "OprunError",
            "ServerError",
            "Throttled",
            "TooLarge",
            "Unavailable",
            "ValidationError",
        )
    },
    **{
        name: "oprun.sdk"
        for name in (
            "AsyncClient",
            "AsyncNoOp",
            "AsyncOperation",
            "Client",
            "HttpRetry",
            "NoOp",
            "Operation",
            "OperationFailed",
        )
    },
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'oprun' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
