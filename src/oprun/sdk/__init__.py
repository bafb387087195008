"""The Python SDK: `Client` and `AsyncClient` over the REST API, and `Operation` snapshots.

Implementation modules are private; what users import is re-exported here and
from `oprun`.
"""

from oprun.sdk._endpoints import ProjectCreated, TokenCreated
from oprun.sdk._retry import HttpRetry
from oprun.sdk.async_client import AsyncClient
from oprun.sdk.client import Client, DefinesActions
from oprun.sdk.errors import OperationFailed
from oprun.sdk.events import AsyncEvents, Events
from oprun.sdk.operation import AsyncNoOp, AsyncOperation, NoOp, Operation

__all__ = [
    "AsyncClient",
    "AsyncEvents",
    "AsyncNoOp",
    "AsyncOperation",
    "Client",
    "DefinesActions",
    "Events",
    "HttpRetry",
    "NoOp",
    "Operation",
    "OperationFailed",
    "ProjectCreated",
    "TokenCreated",
]
