"""The public API is curated: `oprun.__all__` is pinned, and every name in it exists."""

from __future__ import annotations

import oprun
import oprun.sdk

EXPECTED = {
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
    "Requirements",
    "RetryPolicy",
    "ServerError",
    "SessionActionStatus",
    "Throttled",
    "TooLarge",
    "Unavailable",
    "ValidationError",
    "__version__",
}


def test_oprun_all_is_pinned():
    assert set(oprun.__all__) == EXPECTED
    assert len(oprun.__all__) == len(EXPECTED)


def test_every_exported_name_exists():
    for name in oprun.__all__:
        assert hasattr(oprun, name), name
    for name in oprun.sdk.__all__:
        assert hasattr(oprun.sdk, name), name


def test_exported_errors_are_the_domain_error_tree():
    from oprun.domain import errors

    for cls in errors.ERRORS_BY_CODE.values():
        assert getattr(oprun, cls.__name__) is cls
    assert issubclass(oprun.OperationFailed, oprun.OprunError)


def test_statuses_are_the_domain_enums():
    from oprun.domain.status import OperationStatus, SessionActionStatus

    assert oprun.OperationStatus is OperationStatus
    assert oprun.SessionActionStatus is SessionActionStatus
