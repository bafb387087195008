"""Retries: only calls that cannot do anything twice, on 429 / 503 / connection errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from oprun import Conflict, Throttled, Unavailable
from oprun.sdk import HttpRetry
from oprun.sdk import _endpoints as E

from ._sdk_stub import Stub, body, error, ok, op_json

OP = "/v1/operations/op_1"


def test_429_is_retried_after_the_servers_retry_after():
    throttled = error("THROTTLED", 429, "slow down")
    throttled.headers["Retry-After"] = "3"
    stub = Stub().on("GET", OP, throttled, ok(op_json()))
    assert stub.client().operations.get("op_1").id == "op_1"
    assert stub.sleeps == [3.0]
    assert len(stub.requests) == 2


def test_503_is_retried_with_growing_backoff():
    stub = Stub().on(
        "GET",
        OP,
        error("UNAVAILABLE", 503),
        error("UNAVAILABLE", 503),
        error("UNAVAILABLE", 503),
        ok(op_json()),
    )
    stub.client().operations.get("op_1")
    assert len(stub.sleeps) == 3
    policy = HttpRetry()
    for attempt, slept in enumerate(stub.sleeps):
        step = min(policy.max_backoff, policy.backoff * 2**attempt)
        assert step / 2 <= slept <= step


def test_connection_errors_are_retried_then_raise_unavailable():
    stub = Stub().on("GET", OP, httpx.ConnectError("refused"))
    with pytest.raises(Unavailable, match=r"cannot reach oprun at http://oprun\.test"):
        stub.client(retries=2).operations.get("op_1")
    assert len(stub.requests) == 3
    assert len(stub.sleeps) == 2


def test_a_client_takes_its_whole_http_retry_policy_as_retry():
    stub = Stub().on("GET", OP, httpx.ConnectError("refused"))
    policy = HttpRetry(retries=4, backoff=1.0, max_backoff=1.0)
    with pytest.raises(Unavailable):
        stub.client(retry=policy).operations.get("op_1")
    assert len(stub.requests) == 5
    assert all(0.5 <= slept <= 1.0 for slept in stub.sleeps) and len(stub.sleeps) == 4
    stub = Stub().on("GET", OP, httpx.ConnectError("refused"))
    with pytest.raises(Unavailable):
        stub.client(retry=policy, retries=1).operations.get("op_1")  # retries: its count
    assert len(stub.requests) == 2


def test_async_client_takes_retry_too():
    stub = Stub().on("GET", OP, error("UNAVAILABLE", 503))

    async def scenario():
        async with stub.async_client(retry=HttpRetry(retries=0)) as client:
            await client.operations.get("op_1")

    with pytest.raises(Unavailable):
        asyncio.run(scenario())
    assert len(stub.requests) == 1 and stub.sleeps == []


def test_an_http_retry_policy_refuses_a_negative_setting():
    with pytest.raises(ValueError, match=r"HttpRetry\.backoff must be 0 or more"):
        HttpRetry(backoff=-1)


def test_exhausted_retries_raise_the_last_error():
    stub = Stub().on("GET", OP, error("THROTTLED", 429, "slow down"))
    with pytest.raises(Throttled, match="slow down"):
        stub.client(retries=1).operations.get("op_1")
    assert len(stub.requests) == 2


def test_a_retry_after_longer_than_allowed_is_not_waited_for():
    throttled = error("THROTTLED", 429)
    throttled.headers["Retry-After"] = "3600"
    stub = Stub().on("GET", OP, throttled)
    with pytest.raises(Throttled):
        stub.client().operations.get("op_1")
    assert stub.sleeps == []


def test_other_errors_are_not_retried():
    stub = Stub().on("DELETE", OP, error("CONFLICT", 409, "still running"))
    with pytest.raises(Conflict):
        stub.client().operations.delete("op_1")
    assert len(stub.requests) == 1


def test_post_without_idempotency_key_is_not_retried():
    for path, call in (
        ("/v1/operations/op_1:cancel", lambda c: c.operations.cancel("op_1")),
        ("/v1/operations/op_1:retry", lambda c: c.operations.retry("op_1")),
    ):
        stub = Stub().on("POST", path, error("UNAVAILABLE", 503))
        with pytest.raises(Unavailable):
            call(stub.client())
        assert len(stub.requests) == 1 and stub.sleeps == []
        stub = Stub().on("POST", path, httpx.ConnectError("reset"))
        with pytest.raises(Unavailable):
            call(stub.client())
        assert len(stub.requests) == 1
    call = E.invoke(E.invocation("resize").model_copy(update={"idempotency_key": None}))
    assert not call.retry_safe


def test_invoke_is_retried_with_the_same_idempotency_key():
    stub = Stub().on(
        "POST",
        "/v1/operations",
        httpx.ConnectError("reset"),
        error("UNAVAILABLE", 503),
        ok(op_json(), 201),
    )
    op = stub.client().operations.invoke("resize", {"width": "640"})
    assert op.id == "op_1"
    keys = {body(r)["idempotency_key"] for r in stub.requests}
    assert len(stub.requests) == 3 and len(keys) == 1 and None not in keys


def test_async_client_retries_by_the_same_rules():
    throttled = error("THROTTLED", 429)
    throttled.headers["Retry-After"] = "2"
    stub = Stub()
    stub.on("GET", OP, throttled, ok(op_json()))
    stub.on("POST", "/v1/operations/op_1:cancel", error("UNAVAILABLE", 503))

    async def scenario():
        async with stub.async_client() as client:
            op = await client.operations.get("op_1")
            with pytest.raises(Unavailable):
                await client.operations.cancel("op_1")
            return op

    assert asyncio.run(scenario()).id == "op_1"
    assert stub.sleeps == [2.0]
    assert len(stub.sent("POST", "/v1/operations/op_1:cancel")) == 1


def test_policy_is_pure():
    policy = HttpRetry(retries=2)
    get = E.get_operation("op_1")
    assert policy.delay(get, 2, httpx.ConnectError("x")) is None
    assert policy.delay(get, 0, httpx.Response(500)) is None
    assert policy.delay(get, 0, ValueError("not a transport error")) is None
    assert policy.delay(get, 0, httpx.Response(429, headers={"Retry-After": "1.5"})) == 1.5
    assert policy.delay(E.cancel_operation("op_1"), 0, httpx.Response(503)) is None


def test_with_a_deadline_retries_are_unbounded_and_never_pass_it():
    policy = HttpRetry(retries=1)
    get = E.get_operation("op_1")
    refused = httpx.ConnectError("refused")
    assert policy.delay(get, 1, refused) is None  # the count is spent
    assert policy.delay(get, 50, refused, left=60) <= policy.max_outage_backoff
    assert policy.delay(get, 50, refused, left=0.1) <= 0.1  # cut to end at the deadline
    assert policy.delay(get, 0, refused, left=0) is None
    late = httpx.Response(429, headers={"Retry-After": "5"})
    assert policy.delay(get, 0, late, left=10) == 5
    assert policy.delay(get, 0, late, left=4) is None  # a Retry-After is never cut short
    assert policy.delay(E.cancel_operation("op_1"), 0, refused, left=60) is None
    assert policy.delay(get, 0, httpx.Response(500), left=60) is None
    assert policy.backoff_for(10_000) <= policy.max_backoff  # no overflow


def test_wait_retries_connection_failures_until_its_timeout():
    stub = Stub().on(
        "GET",
        "/v1/operations/op_1:wait",
        *[httpx.ConnectError("refused")] * 6,
        ok(op_json(status="SUCCEEDED")),
    )
    op = stub.client(retries=1).operations.wait("op_1", timeout=120)
    assert op.state == "SUCCEEDED"
    assert len(stub.sleeps) == 6 and max(stub.sleeps) <= HttpRetry().max_outage_backoff
