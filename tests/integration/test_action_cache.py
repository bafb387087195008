"""The per-process cache of action versions never answers a stale latest version.

An API process resolves `POST /v1/operations` from its cache of action versions;
the write checks that the version it took as the latest still is (issue 12).
"""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest

from oprun.domain.models import ActionDefinition, InvocationSource
from oprun.service.operations import params_digest
from oprun.store import Store
from oprun.store.creation_pg import CHUNK
from oprun.store.invocations import CheckedOperation, StaleAction
from oprun.store.notify import events_key, work_key
from oprun.testing import Server


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )


def _save(client: httpx.Client, attempts: int) -> int:
    response = client.post(
        "/v1/actions", json={"name": "a", "entrypoint": "m:f", "max_attempts": attempts}
    )
    assert response.status_code in (200, 201), response.text
    return int(response.json()["version"])


def test_a_version_saved_in_one_process_is_invoked_at_once_in_another(database_url, tmp_path):
    first = Server(database_url=database_url, log_path=tmp_path / "a.log").start()
    second = Server(database_url=database_url, token=first.token, log_path=tmp_path / "b.log")
    second.start()
    try:
        with _client(first) as a, _client(second) as b:
            for attempts in range(1, 8):
                version = _save(a, attempts)
                # No pause: the other process's cache still holds the previous version.
                single = b.post("/v1/operations", json={"action": "a"})
                assert single.status_code == 201, single.text
                assert single.json()["action_version"] == version
                assert single.json()["max_attempts"] == attempts
                bulk = b.post(
                    "/v1/operations:bulk",
                    json={"invocations": [{"action": "a"}, {"action": "a", "version": 1}]},
                )
                assert bulk.status_code == 200, bulk.text
                latest, pinned = bulk.json()["operations"]
                assert (latest["action_version"], pinned["action_version"]) == (version, 1)
                assert (latest["max_attempts"], pinned["max_attempts"]) == (attempts, 1)
            # A digest check compares with the version the write uses, not a cached one.
            old_digest = a.get("/v1/actions/a").json()["digest"]
            _save(a, 99)
            refused = b.post("/v1/operations", json={"action": "a", "action_digest": old_digest})
            assert refused.status_code == 409, refused.text
    finally:
        second.stop()
        first.stop()


def _item(action, latest: bool) -> CheckedOperation:
    return CheckedOperation(
        project_id=action.project_id,
        action=action,
        queue="default",
        parameters={},
        params_digest=params_digest({}),
        created_by="test",
        source_type=InvocationSource.MANUAL,
        source_id="test",
        idempotency_key=None,
        timeout=None,
        latest=latest,
    )


def test_an_operation_of_a_superseded_latest_version_is_not_written(store: Store, project):
    old, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    new, _ = store.save_action(
        project.id, ActionDefinition(name="a", entrypoint="m:f", max_attempts=2)
    )
    with pytest.raises(StaleAction) as raised:
        store.create_operations([_item(new, True), _item(old, True)])
    assert raised.value.names == [(project.id, "a")]
    assert store.list_operations(project.id, limit=10) == []
    # Asked of that version by number, it is written; so is the latest as the latest.
    ((pinned, created),) = store.create_operations([_item(old, False)])
    assert created and pinned.action_version == 1
    ((latest, created),) = store.create_operations([_item(new, True)])
    assert created and latest.action_version == 2


def test_a_stale_create_writes_nothing_when_it_is_one_statement(store: Store, project):
    old, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    # The queue known, no idempotency key: PostgreSQL's create is its one statement,
    # outside a transaction, so nothing may be written before the staleness shows.
    ((first, _),) = store.create_operations([_item(old, True)])
    new, _ = store.save_action(
        project.id, ActionDefinition(name="a", entrypoint="m:f", max_attempts=2)
    )
    events = store.list_events(project.id, 0, 100)
    with pytest.raises(StaleAction):
        store.create_operations([_item(new, True), _item(old, True)])
    assert [op.id for op in store.list_operations(project.id, limit=10)] == [first.id]
    assert store.list_events(project.id, 0, 100) == events
    if store.dialect_name == "postgresql":
        store._clock.resync = 3600.0  # no reading of the clock below
    before = store.database_calls()
    ((made, created),) = store.create_operations([_item(new, True)])
    after = store.database_calls()
    assert created and made.action_version == 2
    assert len(store.list_tasks(project.id, made.id, after=None, limit=10)) == 1
    if store.dialect_name == "postgresql":  # the statement alone: no BEGIN, no COMMIT
        assert (after.statements - before.statements, after.round_trips - before.round_trips) == (
            1,
            1,
        )


def test_a_created_operation_has_its_history_event_and_wake_ups(store: Store, project):
    action, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    other = store.create_project("other")
    elsewhere, _ = store.save_action(other.id, ActionDefinition(name="a", entrypoint="m:f"))
    heard = {key: threading.Event() for key in _keys(project.id) + _keys(other.id)}
    for key, flag in heard.items():
        store.notifier.subscribe(key, flag.set)
    made = store.create_operations([_item(action, True), _item(elsewhere, False)])
    for key, flag in heard.items():
        assert flag.wait(5), f"{key} was not published"
    for (op, created), pid in zip(made, (project.id, other.id), strict=True):
        assert created
        stored = store.get_operation(pid, op.id)
        assert [(h.status, h.detail) for h in stored.history] == [("QUEUED", "created")]
        assert stored == op.model_copy(update={"history": stored.history})
        assert len(store.list_tasks(pid, op.id, after=None, limit=10)) == 1
        (event,) = [e for e in store.list_events(pid, 0, 10) if e.type != "action.saved"]
        assert (event.type, event.entity_id, event.data) == (
            "operation.created",
            op.id,
            {"status": "QUEUED"},
        )


def _keys(project_id: str) -> list[str]:
    return [work_key(project_id), events_key(project_id)]


def test_a_mixed_bulk_is_stored_as_answered(store: Store, project):
    one, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    two, _ = store.save_action(
        project.id, ActionDefinition(name="b", entrypoint="m:g", max_attempts=4, queue="other")
    )
    items = []
    for n in range(12):
        item = _item(one if n % 3 else two, n % 2 == 0)
        items.append(
            dataclasses.replace(
                item,
                queue="other" if n % 4 == 0 else "default",
                parameters={"n": n, "text": f'é"{n}\\'},
                params_digest=params_digest({"n": n}),
                idempotency_key=f"key-{n}" if n % 5 else None,
                timeout=None if n % 2 else 10.0 + n,
            )
        )
    made = store.create_operations(items)
    assert all(created for _, created in made)
    for (op, _), item in zip(made, items, strict=True):
        stored = store.get_operation(project.id, op.id)
        assert stored == op.model_copy(update={"history": stored.history})
        assert (stored.queue, stored.parameters, stored.timeout) == (
            item.queue,
            item.parameters,
            item.timeout,
        )
        (task,) = store.list_tasks(project.id, op.id)
        assert (task.parameters, task.max_attempts) == (
            item.parameters,
            item.action.definition.max_attempts,
        )
    again = store.create_operations(items)
    for (op, _), item, (replay, created) in zip(made, items, again, strict=True):
        assert (replay.id == op.id, created) == (
            (True, False) if item.idempotency_key else (False, True)
        )


def test_a_large_bulk_is_written_in_chunks_that_commit_together(store: Store, project):
    """More than `CHUNK` operations: on PostgreSQL, a statement per chunk, pipelined."""
    one, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    two, _ = store.save_action(project.id, ActionDefinition(name="b", entrypoint="m:g"))
    store.create_operations([_item(one, True), _item(two, True)])  # both queues known
    size = 2 * CHUNK + 7
    items = [
        dataclasses.replace(
            _item(one if n < CHUNK + 3 else two, True),
            parameters={"n": n},
            params_digest=params_digest({"n": n}),
        )
        for n in range(size)
    ]
    if store.dialect_name == "postgresql":
        store._clock.resync = 3600.0  # no reading of the clock below
    before = store.database_calls()
    made = store.create_operations(items)
    after = store.database_calls()
    assert [created for _, created in made] == [True] * size
    page = store.list_operations(project.id, limit=size + 10)
    assert {op.id for op, _ in made} <= {op.id for op in page} and len(page) == size + 2
    for (op, _), item in zip(made[:: CHUNK // 2], items[:: CHUNK // 2], strict=True):
        stored = store.get_operation(project.id, op.id)
        assert stored.parameters == item.parameters and stored.kind == item.action.name
        assert [(h.status, h.detail) for h in stored.history] == [("QUEUED", "created")]
        assert len(store.list_tasks(project.id, op.id, after=None, limit=10)) == 1
    created = [e for e in store.list_events(project.id, 0, size + 10) if e.type != "action.saved"]
    assert len(created) == size + 2
    if store.dialect_name == "postgresql":
        # Three statements answered together: BEGIN, the first with them, and COMMIT.
        assert after.statements - before.statements == 3
        assert after.round_trips - before.round_trips <= 3


def test_a_large_bulk_whose_last_chunk_is_stale_writes_nothing(store: Store, project):
    one, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    two, _ = store.save_action(project.id, ActionDefinition(name="b", entrypoint="m:g"))
    store.create_operations([_item(one, True), _item(two, True)])  # both queues known
    store.save_action(project.id, ActionDefinition(name="b", entrypoint="m:g", max_attempts=2))
    events = store.list_events(project.id, 0, 100)
    # The first chunks name a current version; only the last one names b's old one.
    items = [_item(one, True) for _ in range(2 * CHUNK)] + [_item(two, True)]
    with pytest.raises(StaleAction) as raised:
        store.create_operations(items)
    assert raised.value.names == [(project.id, "b")]
    assert len(store.list_operations(project.id, limit=10)) == 2
    assert store.list_events(project.id, 0, 100) == events


def test_a_large_bulk_into_a_new_queue_makes_it_first_and_no_queue_it_does_not_use(
    store: Store, project
):
    from sqlalchemy import text

    action, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    ((first, _),) = store.create_operations(
        [dataclasses.replace(_item(action, True), idempotency_key="k", queue="old")]
    )
    fresh = [
        dataclasses.replace(_item(action, True), queue="fresh", parameters={"n": n})
        for n in range(2 * CHUNK + 1)
    ]
    replay = dataclasses.replace(_item(action, True), idempotency_key="k", queue="never")
    twice = dataclasses.replace(_item(action, True), idempotency_key="j", queue="fresh")
    again = dataclasses.replace(twice, queue="never-either")  # answered by `twice`
    before = store.database_calls()
    made = store.create_operations([*fresh, replay, twice, again])
    after = store.database_calls()
    assert [created for _, created in made] == [True] * len(fresh) + [False, True, False]
    assert made[len(fresh)][0].id == first.id and made[-1][0].id == made[-2][0].id
    assert {op.queue for op, _ in made[: len(fresh)]} == {"fresh"}
    with store.engine.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM queues")).scalars())
    assert {"old", "fresh"} <= names and not {"never", "never-either"} & names
    if store.dialect_name == "postgresql":  # pipelined: the new queue made before the chunks
        statements = after.statements - before.statements
        round_trips = after.round_trips - before.round_trips
        # Three chunks answered in one round trip, and BEGIN and COMMIT: the one-statement
        # path (4 statements, 6 round trips) would be -2.
        assert statements - round_trips == (3 - 1) - 2
