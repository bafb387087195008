"""Operation snapshots: immutability, NoOp, waiting, logs and paging (sync and async)."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from oprun import OperationFailed, OperationStatus, ValidationError
from oprun.domain import models
from oprun.sdk import AsyncNoOp, AsyncOperation, NoOp, Operation

from ._sdk_stub import Stub, log_json, ok, op_json

OP = "/v1/operations/op_1"
WAIT = "/v1/operations/op_1:wait"
LOGS = "/v1/operations/op_1/logs"


def _timeout_of(request: httpx.Request) -> float:
    return float(request.url.params["timeout"])


# -- snapshots -------------------------------------------------------------------------
def test_snapshot_exposes_the_seed_sdks_names():
    stub = Stub().on(
        "GET",
        OP,
        ok(
            op_json(
                status="RUNNING",
                step_code="PROCESSING",
                worker_id="wk_1",
                progress={"percent": 40, "message": "resizing", "counts": {"running": 1}},
                parameters={"width": 640},
            )
        ),
    )
    op = stub.client().operations.get("op_1")
    assert isinstance(op, Operation)
    assert (op.id, op.kind, op.status, op.state) == ("op_1", "resize", "RUNNING", "RUNNING")
    assert op.status is OperationStatus.RUNNING
    assert (op.project_id, op.project, op.created_by) == ("prj_1", "prj_1", "alice")
    assert (op.step_code, op.worker_id, op.service) == ("PROCESSING", "wk_1", "wk_1")
    assert (op.progress.percent, op.progress.message, op.progress.counts.running) == (
        40,
        "resizing",
        1,
    )
    assert op.parameters == {"width": 640}
    assert op.provenance.action.name == "resize"
    assert not op.done and not op.succeeded()
    assert isinstance(op.model, models.Operation)
    assert op.to_dict()["id"] == "op_1"


def test_poll_returns_a_new_snapshot_and_leaves_the_old_one_unchanged():
    stub = Stub().on(
        "GET",
        OP,
        ok(op_json(status="QUEUED")),
        ok(op_json(status="SUCCEEDED", result={"size": 3})),
    )
    op = stub.client().operations.get("op_1")
    polled = op.poll()
    assert polled is not op
    assert (op.status, op.result) == ("QUEUED", None)
    assert (polled.status, polled.result, polled.done) == ("SUCCEEDED", {"size": 3}, True)
    assert polled.succeeded()


def test_refresh_returns_the_fresh_snapshot_without_mutating():
    stub = Stub().on("GET", OP, ok(op_json(status="QUEUED")), ok(op_json(status="RUNNING")))
    op = stub.client().operations.get("op_1")
    fresh = op.refresh()
    assert (op.state, fresh.state) == ("QUEUED", "RUNNING")


def test_snapshot_attributes_cannot_be_assigned():
    op = Stub().on("GET", OP, ok(op_json())).client().operations.get("op_1")
    with pytest.raises(AttributeError, match="immutable snapshot"):
        op.status = OperationStatus.SUCCEEDED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        op.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(Exception):  # noqa: B017 - the record itself is frozen too
        op.model.status = OperationStatus.SUCCEEDED  # type: ignore[misc]
    assert op.status == "QUEUED"


def test_snapshots_of_the_same_record_are_equal():
    stub = Stub().on("GET", OP, ok(op_json()))
    client = stub.client()
    assert client.operations.get("op_1") == client.operations.get("op_1")
    assert len({client.operations.get("op_1"), client.operations.get("op_1")}) == 1


# -- NoOp ------------------------------------------------------------------------------
def test_from_response_turns_204_into_a_noop():
    client = Stub().client()
    request = httpx.Request("POST", "http://oprun.test/v1/operations")
    noop = Operation.from_response(client, httpx.Response(204, request=request))
    assert isinstance(noop, NoOp)
    assert noop.succeeded() and noop.done
    assert noop.status is OperationStatus.SUCCEEDED and noop.state == "SUCCEEDED"
    assert noop.poll() is noop and noop.wait() is noop and noop.refresh() is noop
    assert noop.wait_until_done() is noop
    assert noop.id is None and noop.result is None


def test_from_response_builds_an_operation_or_raises_the_error():
    client = Stub().client()
    request = httpx.Request("POST", "http://oprun.test/v1/operations")
    op = Operation.from_response(client, httpx.Response(201, json=op_json(), request=request))
    assert isinstance(op, Operation) and op.id == "op_1"
    from oprun import NotFound

    with pytest.raises(NotFound):
        Operation.from_response(
            client,
            httpx.Response(
                404,
                json={"error": {"code": "NOT_FOUND", "message": "no action 'x'"}},
                request=request,
            ),
        )


def test_invoke_answered_204_is_a_noop_naming_the_action():
    stub = Stub().on("POST", "/v1/operations", httpx.Response(204))
    noop = stub.client().operations.invoke("thumbnail", {"size": "64"})
    assert isinstance(noop, NoOp)
    assert noop.kind == "thumbnail" and noop.succeeded()


# -- waiting ---------------------------------------------------------------------------
def test_wait_rides_the_server_long_poll_until_done():
    stub = Stub().on(
        "GET",
        WAIT,
        ok(op_json(status="RUNNING")),
        ok(op_json(status="RUNNING")),
        ok(op_json(status="SUCCEEDED")),
    )
    op = Operation(stub.client(), models.Operation.model_validate(op_json(status="QUEUED")))
    done = op.wait()
    assert done.state == "SUCCEEDED" and op.state == "QUEUED"
    waits = stub.sent("GET", WAIT)
    assert len(waits) == 3
    assert all(_timeout_of(r) == 30 for r in waits)
    assert not stub.sent("GET", OP)


def test_wait_asks_for_no_more_than_the_time_left():
    stub = Stub().on("GET", WAIT, ok(op_json(status="SUCCEEDED")))
    stub.client().operations.wait("op_1", timeout=5)
    assert 0 < _timeout_of(stub.sent("GET", WAIT)[0]) <= 5


def test_wait_raises_the_builtin_timeout_error(monkeypatch):
    clock = itertools.count(0, 10)
    monkeypatch.setattr("oprun.sdk.client.time.monotonic", lambda: next(clock))
    stub = Stub().on("GET", WAIT, ok(op_json(status="RUNNING")))
    with pytest.raises(TimeoutError, match="op_1 is still RUNNING after 15 seconds"):
        stub.client().operations.wait("op_1", timeout=15)


def test_wait_of_a_done_snapshot_sends_nothing():
    stub = Stub()
    op = Operation(stub.client(), models.Operation.model_validate(op_json(status="FAILED")))
    assert op.wait() is op
    assert stub.requests == []


def test_wait_with_poll_interval_sleeps_between_plain_gets():
    stub = Stub().on("GET", OP, ok(op_json(status="RUNNING")), ok(op_json(status="CANCELED")))
    op = stub.client().operations.wait("op_1", poll_interval=2.5)
    assert op.state == "CANCELED"
    assert len(stub.sent("GET", OP)) == 2 and not stub.sent("GET", WAIT)
    assert stub.sleeps == [2.5]


def test_wait_until_done_raises_operation_failed_carrying_the_operation():
    error = {"code": "ValueError", "message": "width must be positive"}
    stub = Stub().on("GET", WAIT, ok(op_json(status="FAILED", error=error)))
    with pytest.raises(OperationFailed) as info:
        stub.client().operations.wait_until_done("op_1")
    failed = info.value
    assert failed.operation.id == "op_1" and failed.operation.state == "FAILED"
    assert "width must be positive" in str(failed)
    assert failed.details["status"] == "FAILED"


def test_wait_until_done_honours_raise_on():
    stub = Stub().on("GET", WAIT, ok(op_json(status="CANCELED")))
    client = stub.client()
    assert client.operations.wait_until_done("op_1").state == "CANCELED"
    with pytest.raises(OperationFailed):
        client.operations.wait_until_done("op_1", raise_on=("FAILED", "CANCELED"))
    with pytest.raises(ValidationError, match="CANCELLED"):
        client.operations.wait_until_done("op_1", raise_on=("CANCELLED",))
    with pytest.raises(ValidationError, match="Cancelld"):
        client.operations.wait_until_done("op_1", raise_exception_if="Cancelld")


def test_watch_yields_each_snapshot_until_done():
    stub = Stub().on(
        "GET",
        WAIT,
        ok(op_json(status="RUNNING", progress={"percent": 10})),
        ok(op_json(status="RUNNING", progress={"percent": 60})),
        ok(op_json(status="SUCCEEDED", progress={"percent": 100})),
    )
    seen = [op.progress.percent for op in stub.client().operations.watch("op_1", every=1)]
    assert seen == [10, 60, 100]
    assert all(_timeout_of(r) == 1 for r in stub.sent("GET", WAIT))


# -- logs ------------------------------------------------------------------------------
def _logs_page(*records: dict) -> httpx.Response:
    return ok({"items": list(records), "next_cursor": None})


def test_logs_reads_every_record_once():
    stub = Stub().on("GET", LOGS, _logs_page(log_json(1, "a"), log_json(2, "b")))
    lines = [r.line for r in stub.client().operations.logs("op_1")]
    assert lines == ["a", "b"]
    assert stub.sent("GET", LOGS)[0].url.params["after"] == "0"
    assert "follow" not in stub.sent("GET", LOGS)[0].url.params


def test_logs_follow_long_polls_until_the_operation_is_done():
    stub = Stub()
    stub.on(
        "GET",
        LOGS,
        _logs_page(log_json(1, "a")),
        _logs_page(),  # the long poll ran out: operation still running
        _logs_page(log_json(2, "b")),
        _logs_page(),  # operation ended
        _logs_page(),  # final drain
    )
    stub.on("GET", OP, ok(op_json(status="RUNNING")), ok(op_json(status="SUCCEEDED")))
    op = Operation(stub.client(), models.Operation.model_validate(op_json(status="RUNNING")))
    assert [r.line for r in op.logs(follow=True)] == ["a", "b"]
    sent = stub.sent("GET", LOGS)
    assert [r.url.params["after"] for r in sent] == ["0", "1", "1", "2", "2"]
    assert sent[0].url.params["follow"] == "true"
    assert "follow" not in sent[-1].url.params


# -- paging ----------------------------------------------------------------------------
def test_list_follows_next_cursor_and_stops_at_limit():
    def page(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        if cursor is None:
            return ok({"items": [op_json("op_3"), op_json("op_2")], "next_cursor": "c1"})
        return ok({"items": [op_json("op_1")], "next_cursor": None})

    stub = Stub().on("GET", "/v1/operations", page)
    client = stub.client()
    assert [op.id for op in client.operations.list(status="QUEUED")] == ["op_3", "op_2", "op_1"]
    assert [r.url.params.get("cursor") for r in stub.requests] == [None, "c1"]
    assert stub.requests[0].url.params["status"] == "QUEUED"
    stub.requests.clear()
    assert [op.id for op in client.operations.list(limit=2)] == ["op_3", "op_2"]
    assert len(stub.requests) == 1
    assert stub.requests[0].url.params["limit"] == "2"


def test_invoke_many_answers_in_order_with_noops():
    stub = Stub().on("POST", "/v1/operations:bulk", ok({"operations": [op_json("op_1"), None]}))
    answers = stub.client().operations.invoke_many(
        [{"action": "resize"}, models.Invocation(action="thumbnail")]
    )
    assert isinstance(answers[0], Operation) and answers[0].id == "op_1"
    assert isinstance(answers[1], NoOp) and answers[1].kind == "thumbnail"


# -- async twins -----------------------------------------------------------------------
def test_async_operation_polls_and_waits_without_mutating():
    stub = Stub()
    stub.on("GET", OP, ok(op_json(status="QUEUED")), ok(op_json(status="RUNNING")))
    stub.on("GET", WAIT, ok(op_json(status="SUCCEEDED", result=[1])))

    async def scenario():
        async with stub.async_client() as client:
            op = await client.operations.get("op_1")
            assert isinstance(op, AsyncOperation)
            polled = await op.poll()
            done = await polled.wait(timeout=60)
            return op, polled, done

    op, polled, done = asyncio.run(scenario())
    assert (op.state, polled.state, done.state, done.result) == (
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
        [1],
    )


def test_async_noop_and_list_and_logs():
    stub = Stub()
    stub.on("POST", "/v1/operations", httpx.Response(204))
    stub.on("GET", "/v1/operations", ok({"items": [op_json("op_2")], "next_cursor": None}))
    stub.on("GET", LOGS, _logs_page(log_json(1, "hello")))

    async def scenario():
        async with stub.async_client() as client:
            noop = await client.operations.invoke("resize")
            ids = [op.id async for op in client.operations.list()]
            op = AsyncOperation(client, models.Operation.model_validate(op_json()))
            lines = [r.line async for r in op.logs()]
            return noop, await noop.wait(), ids, lines

    noop, waited, ids, lines = asyncio.run(scenario())
    assert isinstance(noop, AsyncNoOp) and noop.succeeded() and waited is noop
    assert ids == ["op_2"] and lines == ["hello"]


def test_async_wait_until_done_raises_operation_failed():
    stub = Stub().on("GET", WAIT, ok(op_json(status="FAILED")))

    async def scenario():
        async with stub.async_client() as client:
            await client.operations.wait_until_done("op_1", timeout=10)

    with pytest.raises(OperationFailed) as info:
        asyncio.run(scenario())
    assert isinstance(info.value.operation, AsyncOperation)
