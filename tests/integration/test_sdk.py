"""Every SDK call, on both twins, against a real server and a real worker.

One server and worker (SQLite) serve the whole module; each test makes what it
needs (tokens with unique names, so lists can be filtered to the test's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import httpx
import pytest

import oprun
from oprun import (
    AccessDenied,
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    NotFound,
    OperationFailed,
    OperationStatus,
    TooLarge,
    ValidationError,
)
from oprun.domain import models
from oprun.domain.params import ParameterSpec
from oprun.sdk import AsyncNoOp, AsyncOperation, NoOp, Operation
from tests.integration._live import Live, live

TIMEOUT = 30


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Live]:
    with live(tmp_path_factory.mktemp("sdk")) as running:
        yield running


@pytest.fixture
def client(env: Live) -> Iterator[Client]:
    with Client(env.url, env.token) as admin:
        yield admin


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def operator(admin: Client, role: str = "operator") -> tuple[str, str]:
    """A new token of the admin's project: (its name, its secret)."""
    name = unique(role)
    return name, admin.tokens.create(name, role).secret


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the requests sent per path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    """`CountingTransport` for `AsyncClient`."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


# -- operations: invoke, wait, logs, tasks, session actions -----------------------------
def test_invoke_wait_and_read_everything_sync(client: Client) -> None:
    op = client.operations.invoke("progress", {"steps": 3, "delay": 0.01})
    assert isinstance(op, Operation) and op.id.startswith("op_")
    assert op.status in (OperationStatus.QUEUED, OperationStatus.SCHEDULED)

    done = op.wait(timeout=TIMEOUT)
    assert done.succeeded() and done.done and done.state == "SUCCEEDED"
    assert done.result == {"steps": 3}
    assert op.state != "SUCCEEDED" or op is done  # the first snapshot never changed
    assert done.progress.percent == 100 and done.progress.counts.succeeded == 1
    assert done.step_code == "PROCESSING"
    assert done.history[0].status == "QUEUED"
    assert done.history[-1].status == "SUCCEEDED"
    assert (done.action_type, done.kind) == ("progress", "progress")
    assert done.user_id == done.created_by and done.project_id == done.project
    assert done.service_name == done.worker_id and done.worker_id.startswith("wk_")
    assert done.provenance.action.name == "progress"
    assert done.parameters == {"steps": 3, "delay": 0.01}

    assert op.poll() == done and op.refresh() == done
    assert op.wait(poll_interval_seconds=0.05, timeout_seconds=TIMEOUT) == done
    assert op.wait_until_done(timeout=TIMEOUT) == done
    assert client.operations.wait_until_done(op.id, TIMEOUT, raise_exception_if="Errored") == done

    lines = [r.line for r in done.logs()]
    assert [x for x in lines if x.startswith("did step")] == [
        "did step 1",
        "did step 2",
        "did step 3",
    ]
    assert "printed to stdout" in lines
    assert [r.line for r in client.operations.logs(op.id, after=1)] == lines[1:]

    (task,) = done.tasks()
    assert task.operation_id == op.id and task.status is OperationStatus.SUCCEEDED
    attempts = list(done.session_actions())
    assert attempts and all(sa.operation_id == op.id for sa in attempts)
    run = client.session_actions.get(attempts[-1].id)
    assert run.status == "SUCCEEDED" and run.worker_id == done.worker_id
    assert run.started_at is not None and run.ended_at is not None


def test_invoke_wait_and_read_everything_async(env: Live) -> None:
    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as client:
            op = await client.operations.invoke("progress", {"steps": 2, "delay": 0.01})
            assert isinstance(op, AsyncOperation)
            done = await op.wait(timeout=TIMEOUT)
            assert done.succeeded() and done.result == {"steps": 2}
            assert await op.poll() == done and await op.refresh() == done
            assert await op.wait(poll_interval_seconds=0.05, timeout_seconds=TIMEOUT) == done
            assert await op.wait_until_done(timeout=TIMEOUT) == done
            again = await client.operations.wait_until_done(
                op.id, TIMEOUT, raise_exception_if=["Errored", "Cancelled"]
            )
            assert again == done
            lines = [r.line async for r in done.logs()]
            assert "did step 2" in lines
            followed = [r.line async for r in client.operations.logs(op.id, follow=True)]
            assert followed == lines
            (task,) = [t async for t in done.tasks()]
            assert task.status is OperationStatus.SUCCEEDED
            attempts = [sa async for sa in done.session_actions()]
            run = await client.session_actions.get(attempts[-1].id)
            assert run.status == "SUCCEEDED"
            seen = [s.state async for s in client.operations.watch(op.id, every=0.5)]
            assert seen == ["SUCCEEDED"]

    asyncio.run(scenario())


def test_follow_logs_while_it_runs_sync(client: Client) -> None:
    op = client.operations.invoke("progress", {"steps": 4, "delay": 0.1})
    followed = [r.line for r in op.logs(follow=True)]
    assert [x for x in followed if x.startswith("did step")] == [
        f"did step {i}" for i in range(1, 5)
    ]
    states = [s.state for s in client.operations.watch(op.id, every=0.2)]
    assert states[-1] == "SUCCEEDED"


def test_failed_operation_sync(client: Client) -> None:
    op = client.operations.invoke("fail", {"message": "kaboom"})
    with pytest.raises(OperationFailed, match="kaboom") as caught:
        op.wait_until_done(timeout=TIMEOUT)
    failed = caught.value.operation
    assert failed.state == "FAILED" and failed.error is not None
    with pytest.raises(OperationFailed):
        client.operations.wait_until_done(op.id, TIMEOUT, raise_exception_if="Errored")
    assert client.operations.wait_until_done(op.id, TIMEOUT, raise_on=()).state == "FAILED"
    assert client.operations.wait(op.id, TIMEOUT).error.message.endswith("kaboom")


def test_failed_operation_async(env: Live) -> None:
    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as client:
            op = await client.operations.invoke("fail", {"message": "kaboom"})
            with pytest.raises(OperationFailed, match="kaboom"):
                await op.wait_until_done(timeout=TIMEOUT)
            assert (await client.operations.wait(op.id, TIMEOUT)).state == "FAILED"

    asyncio.run(scenario())


def test_cancel_retry_delete_sync(client: Client, tmp_path) -> None:
    op = client.operations.invoke("once", {"marker_dir": str(tmp_path / "m"), "seconds": 30})
    with pytest.raises(Conflict):
        op.delete()  # 409: still running
    canceling = op.cancel()
    assert canceling.state in ("CANCELING", "CANCELED")
    canceled = op.wait(timeout=TIMEOUT)
    assert canceled.state == "CANCELED"
    again = canceled.retry()
    assert again.id != op.id and again.parameters == op.parameters
    client.operations.cancel(again.id)
    assert client.operations.wait(again.id, TIMEOUT).state == "CANCELED"
    canceled.delete()
    client.operations.delete(again.id)
    with pytest.raises(NotFound):
        client.operations.get(op.id)


def test_cancel_retry_delete_async(env: Live, tmp_path) -> None:
    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as client:
            op = await client.operations.invoke(
                "once", {"marker_dir": str(tmp_path / "m"), "seconds": 30}
            )
            with pytest.raises(Conflict):
                await client.operations.delete(op.id)
            await op.cancel()
            canceled = await op.wait(timeout=TIMEOUT)
            assert canceled.state == "CANCELED"
            again = await canceled.retry()
            await again.cancel()
            assert (await again.wait(timeout=TIMEOUT)).state == "CANCELED"
            await canceled.delete()
            await (await client.operations.get(again.id)).delete()
            with pytest.raises(NotFound):
                await client.operations.get(op.id)

    asyncio.run(scenario())


# -- invoking many, idempotency, cached no-ops, paging ----------------------------------
def test_idempotency_bulk_and_paging_sync(client: Client, env: Live) -> None:
    name, secret = operator(client)
    counting = CountingTransport()
    with Client(env.url, secret, transport=counting) as mine:
        first = mine.operations.invoke("echo", {"value": 1}, idempotency_key=unique("key"))
        replay = mine.operations.invoke("echo", {"value": 1}, idempotency_key=first.idempotency_key)
        assert replay.id == first.id
        made = mine.operations.invoke_many(
            [{"action": "echo", "parameters": {"value": i}} for i in range(6)]
        )
        assert len({op.id for op in made}) == 6
        counting.paths.clear()
        listed = list(mine.operations.list(created_by=name, page_size=3))
        assert len(listed) == 7
        assert counting.paths == ["/v1/operations"] * 3  # 3 + 3 + 1
        assert {op.id for op in listed[:6]} == {op.id for op in made}  # newest first
        assert listed[-1].id == first.id
        assert len(list(mine.operations.list(created_by=name, limit=5, page_size=2))) == 5
        for op in [first, *made]:  # all seven: claims need not follow invocation order
            op.wait(timeout=TIMEOUT)
        done = list(mine.operations.list(status="SUCCEEDED", created_by=name, action="echo"))
        assert len(done) == 7


def test_idempotency_bulk_and_paging_async(client: Client, env: Live) -> None:
    name, secret = operator(client)

    async def scenario() -> None:
        counting = AsyncCountingTransport()
        async with AsyncClient(env.url, secret, transport=counting) as mine:
            key = unique("key")
            first = await mine.operations.invoke("echo", {"value": 1}, idempotency_key=key)
            replay = await mine.operations.invoke("echo", {"value": 1}, idempotency_key=key)
            assert replay.id == first.id
            made = await mine.operations.invoke_many(
                [models.Invocation(action="echo", parameters={"value": i}) for i in range(4)]
            )
            counting.paths.clear()
            listed = [op async for op in mine.operations.list(created_by=name, page_size=2)]
            assert len(listed) == 5 and len(counting.paths) == 3
            assert {op.id for op in made} < {op.id for op in listed}

    asyncio.run(scenario())


def test_a_cacheable_action_answers_a_noop_sync_and_async(client: Client, env: Live) -> None:
    definition = models.ActionDefinition(
        name=unique("cached"),
        entrypoint="tests.integration.actions:echo",
        parameters=[ParameterSpec(name="value", type="json", required=False)],
        cacheable=True,
    )
    client.actions.register(definition)
    first = client.operations.invoke(definition.name, {"value": 7})
    assert first.wait(timeout=TIMEOUT).result == 7
    again = client.operations.invoke(definition.name, {"value": 7})
    assert isinstance(again, NoOp) and again.succeeded() and again.wait() is again

    raw = httpx.post(
        f"{env.url}/v1/operations",
        json={"action": definition.name, "parameters": {"value": 7}},
        headers={"Authorization": f"Bearer {env.token}"},
    )
    assert raw.status_code == 204
    assert isinstance(Operation.from_response(client, raw), NoOp)
    created = httpx.post(
        f"{env.url}/v1/operations",
        json={"action": definition.name, "parameters": {"value": 8}},
        headers={"Authorization": f"Bearer {env.token}"},
    )
    op = Operation.from_response(client, created)
    assert isinstance(op, Operation) and op.wait(timeout=TIMEOUT).result == 8

    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as aclient:
            noop = await aclient.operations.invoke(definition.name, {"value": 7})
            assert isinstance(noop, AsyncNoOp) and noop.succeeded()
            assert isinstance(AsyncOperation.from_response(aclient, raw), AsyncNoOp)

    asyncio.run(scenario())


# -- actions, tokens, projects, workers, health -----------------------------------------
def _definition(name: str, description: str) -> models.ActionDefinition:
    return models.ActionDefinition(
        name=name, entrypoint="tests.integration.actions:echo", description=description
    )


def test_actions_tokens_projects_workers_sync(client: Client) -> None:
    assert client.health()["status"] == "ok"
    name = unique("act")
    v1 = client.actions.register(_definition(name, "first"))
    v2 = client.actions.register(_definition(name, "second"))
    assert (v1.version, v2.version) == (1, 2)
    assert client.actions.register(_definition(name, "second")).version == 2  # unchanged
    assert client.actions.get(name).version == 2
    assert client.actions.get(name, 1).definition.description == "first"
    assert [a.version for a in client.actions.versions(name)] == [2, 1]
    assert name in {a.name for a in client.actions.list()}
    assert len(list(client.actions.list(limit=1))) == 1
    from tests.unit._cli_app import app as small_app

    saved = client.actions.register(small_app)
    assert [a.name for a in saved] == ["add"]

    created = client.tokens.create(unique("tok"), "viewer")
    assert created.secret and created.token.role == "viewer"
    assert created.token.id in {t.id for t in client.tokens.list()}
    assert client.tokens.revoke(created.token.id).revoked_at is not None
    with Client(client.url, created.secret) as revoked, pytest.raises(AuthenticationError):
        revoked.projects.current()

    project = client.projects.current()
    other = client.projects.create(unique("proj"))
    assert other.project.id != project.id and other.token

    workers = list(client.workers.list())
    assert workers and client.workers.get(workers[0].id).id == workers[0].id
    assert "echo" in {a.name for a in client.actions.list()}


def test_actions_tokens_projects_workers_async(env: Live) -> None:
    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as client:
            assert (await client.health())["status"] == "ok"
            name = unique("act")
            await client.actions.register(_definition(name, "first"))
            await client.actions.register(_definition(name, "second"))
            assert (await client.actions.get(name)).version == 2
            assert (await client.actions.get(name, 1)).definition.description == "first"
            from tests.unit._cli_app import app as small_app

            assert [a.name for a in await client.actions.register(small_app)] == ["add"]
            assert [a.version async for a in client.actions.versions(name)] == [2, 1]
            assert name in {a.name async for a in client.actions.list()}
            created = await client.tokens.create(unique("tok"), "operator")
            assert created.token.id in {t.id async for t in client.tokens.list()}
            await client.tokens.revoke(created.token.id)
            project = await client.projects.current()
            other = await client.projects.create(unique("proj"))
            assert other.project.id != project.id
            workers = [w async for w in client.workers.list()]
            assert (await client.workers.get(workers[0].id)).id == workers[0].id

    asyncio.run(scenario())


# -- every error the API can answer -----------------------------------------------------
def test_every_error_code_maps_to_its_class_sync(client: Client, env: Live) -> None:
    with pytest.raises(ValidationError, match="steps") as bad:  # 400
        client.operations.invoke("progress", {"steps": "abc"})
    assert bad.value.details.get("parameter") == "steps"
    with Client(env.url, "oprun_not_a_token") as stranger, pytest.raises(AuthenticationError):
        stranger.operations.list().__next__()  # 401
    _, viewer = operator(client, "viewer")
    with Client(env.url, viewer) as reader, pytest.raises(AccessDenied):
        reader.operations.invoke("echo")  # 403
    with pytest.raises(NotFound):  # 404
        client.operations.get("op_doesnotexist")
    op = client.operations.invoke("echo", {"value": 1})
    other = client.projects.create(unique("proj"))
    with Client(env.url, other.token) as outsider, pytest.raises(NotFound):
        outsider.operations.get(op.id)  # another project's id is 404, never 403
    with pytest.raises(TooLarge):  # 413
        client.operations.invoke("echo", {"value": "x" * (1024 * 1024 + 1)})
    # 409 is proven by test_cancel_retry_delete_*; 429/500/503 by test_sdk_retries.py.
    assert all(
        issubclass(cls, oprun.OprunError)
        for cls in (ValidationError, AuthenticationError, AccessDenied, NotFound, TooLarge)
    )


def test_every_error_code_maps_to_its_class_async(client: Client, env: Live) -> None:
    _, viewer = operator(client, "viewer")

    async def scenario() -> None:
        async with AsyncClient(env.url, env.token) as aclient:
            with pytest.raises(ValidationError):
                await aclient.operations.invoke("progress", {"steps": "abc"})
            with pytest.raises(NotFound):
                await aclient.operations.get("op_doesnotexist")
            with pytest.raises(TooLarge):
                await aclient.operations.invoke("echo", {"value": "x" * (1024 * 1024 + 1)})
        async with AsyncClient(env.url, "oprun_not_a_token") as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.projects.current()
        async with AsyncClient(env.url, viewer) as reader:
            with pytest.raises(AccessDenied):
                await reader.operations.invoke("echo")

    asyncio.run(scenario())


# -- events -------------------------------------------------------------------------------
def _until_succeeded(events) -> list[models.Event]:
    seen: list[models.Event] = []
    for event in events:
        seen.append(event)
        if event.type == "operation.status" and event.data.get("status") == "SUCCEEDED":
            break
    return seen


def test_events_stream_one_operations_changes_sync(client: Client) -> None:
    op = client.operations.invoke("progress", {"steps": 2, "delay": 0.01})
    op.wait(timeout=TIMEOUT)
    with contextlib.closing(client.events.stream(after=0, entity_id=op.id)) as events:
        seen = _until_succeeded(events)
    assert seen[0].type == "operation.created" and seen[0].entity_id == op.id
    assert all(e.entity_id == op.id for e in seen)
    assert [e.id for e in seen] == sorted({e.id for e in seen})
    with contextlib.closing(
        client.events.stream(after=0, types={"operation.status"}, entity_id=op.id)
    ) as statuses:
        only = _until_succeeded(statuses)
    assert {e.type for e in only} == {"operation.status"}
    assert [e.id for e in only] == [e.id for e in seen if e.type == "operation.status"]
    first = seen[0]
    with contextlib.closing(client.events.stream(after=first.id, entity_id=op.id)) as later:
        assert next(later).id > first.id


def test_events_stream_one_operations_changes_async(env: Live) -> None:
    async def scenario() -> list[models.Event]:
        async with AsyncClient(env.url, env.token) as client:
            op = await client.operations.invoke("echo", {"value": "e"})
            await op.wait(timeout=TIMEOUT)
            seen: list[models.Event] = []
            async with contextlib.aclosing(
                client.events.stream(after=0, entity_id=op.id)
            ) as events:
                async for event in events:
                    seen.append(event)
                    if event.data.get("status") == "SUCCEEDED":
                        break
            return seen

    seen = asyncio.run(scenario())
    assert seen[0].type == "operation.created" and seen[-1].data["status"] == "SUCCEEDED"
