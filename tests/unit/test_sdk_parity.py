"""`Client` and `AsyncClient` (and their operations) keep identical method names."""

from __future__ import annotations

import inspect

import pytest

from oprun.sdk import AsyncClient, AsyncNoOp, AsyncOperation, Client, NoOp, Operation

RESOURCES = (
    "actions",
    "operations",
    "session_actions",
    "queues",
    "workers",
    "tokens",
    "projects",
    "events",
    "audit",
)


def _public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def _signature(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_clients_have_the_same_public_names():
    sync, aio = Client("http://x"), AsyncClient("http://x")
    assert _public(sync) == _public(aio)
    assert set(RESOURCES) <= _public(sync)


@pytest.mark.parametrize("resource", RESOURCES)
def test_resources_have_the_same_methods_and_parameters(resource):
    sync = getattr(Client("http://x"), resource)
    aio = getattr(AsyncClient("http://x"), resource)
    assert _public(sync) == _public(aio), resource
    for name in _public(sync):
        assert _signature(getattr(sync, name)) == _signature(getattr(aio, name)), name


@pytest.mark.parametrize(("sync", "aio"), [(Operation, AsyncOperation), (NoOp, AsyncNoOp)])
def test_operation_twins_have_the_same_methods(sync, aio):
    assert _public(sync) == _public(aio)
    for name in _public(sync):
        member = getattr(sync, name)
        if callable(member):
            assert _signature(member) == _signature(getattr(aio, name)), name


def test_noop_answers_the_common_snapshot_questions():
    shared = {"id", "kind", "status", "state", "done", "succeeded", "result", "error"}
    shared |= {"poll", "refresh", "wait", "wait_until_done", "progress", "step_code", "to_dict"}
    assert shared <= _public(NoOp) & _public(Operation)
