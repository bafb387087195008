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
}


SDK_EXPECTED = {
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
}


def test_oprun_all_is_pinned():
    assert set(oprun.__all__) == EXPECTED
    assert len(oprun.__all__) == len(EXPECTED)


def test_oprun_sdk_all_is_pinned():
    assert set(oprun.sdk.__all__) == SDK_EXPECTED
    assert len(oprun.sdk.__all__) == len(SDK_EXPECTED)


def test_one_name_per_concept():
    # Task retries are the domain's RetryPolicy; the SDK's HTTP retries are HttpRetry.
    from oprun.domain.models import RetryPolicy
    from oprun.sdk._retry import HttpRetry

    assert oprun.RetryPolicy is RetryPolicy
    assert oprun.HttpRetry is oprun.sdk.HttpRetry is HttpRetry
    assert not hasattr(oprun.sdk, "RetryPolicy")


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


def test_the_package_is_marked_typed_for_its_users():
    # PEP 561: mypy and pyright read oprun's annotations only when py.typed ships with it
    # (hatch puts every file under src/oprun in the wheel).
    from importlib.resources import files

    assert files("oprun").joinpath("py.typed").is_file()
