"""Retention on SQLite and PostgreSQL: finished operations go with every row about them,
unfinished ones stay, each project keeps its own count, old events go and streams resume.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import func, select

from oprun.domain.errors import NotFound
from oprun.domain.models import ActionDefinition
from oprun.domain.protocol import Report
from oprun.domain.retention import Boundary, RetentionSettings
from oprun.domain.status import OperationStatus
from oprun.service.retention import purge_round
from oprun.service.settings import Settings
from oprun.store import schema as t
from oprun.testing import Server, Worker
from tests.integration._invocations import invoke

EVERYTHING = Boundary(1e18, "")
"""A boundary after every finished operation."""


def _invoke(store, project_id, n=1):
    action, _ = store.save_action(project_id, ActionDefinition(name="a", entrypoint="m:f"))
    return invoke(store, action, n)


def _finish(store, project_id, worker, n, kind="succeeded"):
    """Claim `n` waiting tasks and end them together (one transaction: the same ended_at)."""
    got = store.claim(worker.id, project_id, ["default"], n, 30)
    assert len(got) == n
    reports = []
    for a in got:
        reports += [
            Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=k)
            for k in ("running",)
        ]
        reports.append(
            Report(
                session_action_id=a.session_action_id,
                lease_epoch=a.lease_epoch,
                kind="log",
                lines=["one", "two"],
            )
        )
        reports.append(
            Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=kind)
        )
    assert all(o.accepted for o in store.apply_reports(worker.id, reports))
    return [a.operation_id for a in got]


def _rows_about(store, op_ids):
    """How many rows of each table still speak of these operations."""
    ids = list(op_ids)
    with store.engine.connect() as conn:
        tasks = conn.execute(select(t.tasks.c.id).where(t.tasks.c.operation_id.in_(ids)))
        task_ids = tasks.scalars().all()
        sas = conn.execute(
            select(t.session_actions.c.id).where(t.session_actions.c.operation_id.in_(ids))
        ).scalars()
        entities = ids + list(task_ids) + list(sas)
        counts = {
            "operations": select(func.count()).where(t.operations.c.id.in_(ids)),
            "tasks": select(func.count()).where(t.tasks.c.operation_id.in_(ids)),
            "sessions": select(func.count()).where(t.sessions.c.operation_id.in_(ids)),
            "session_actions": select(func.count()).where(
                t.session_actions.c.operation_id.in_(ids)
            ),
            "history": select(func.count()).where(t.status_history.c.entity_id.in_(entities)),
            "logs": select(func.count()).where(t.logs.c.operation_id.in_(ids)),
        }
        return {name: conn.execute(query).scalar_one() for name, query in counts.items()}


def test_purge_removes_finished_operations_and_every_row_about_them(store, project):
    worker = store.register_worker(project.id, "w", "host", ["default"], {})
    _invoke(store, project.id, n=6)
    succeeded = _finish(store, project.id, worker, 2)
    failed = _finish(store, project.id, worker, 1, kind="failed")
    running = store.claim(worker.id, project.id, ["default"], 1, 30)[0].operation_id
    queued = [op.id for op in store.list_operations(project.id, status=OperationStatus.QUEUED)]
    canceled = queued.pop()
    store.cancel_operation(project.id, canceled, "test")
    finished = [*succeeded, *failed, canceled]
    before = _rows_about(store, finished)
    assert before["logs"] == 6 and before["history"] > 10 and before["session_actions"] == 3

    assert store.purge_operations(project.id, EVERYTHING, 100) == 4

    assert set(_rows_about(store, finished).values()) == {0}
    for op_id in finished:
        with pytest.raises(NotFound):
            store.get_operation(project.id, op_id)
    assert store.get_operation(project.id, running).status is OperationStatus.SCHEDULED
    (waiting,) = queued
    kept = store.get_operation(project.id, waiting)
    assert kept.status is OperationStatus.QUEUED and [h.status for h in kept.history] == ["QUEUED"]
    assert store.purge_operations(project.id, EVERYTHING, 100) == 0


def test_purge_goes_oldest_first_in_batches_and_stops_at_the_boundary(store, project):
    worker = store.register_worker(project.id, "w", "host", ["default"], {})
    _invoke(store, project.id, n=5)
    first = [_finish(store, project.id, worker, 1)[0] for _ in range(3)]
    time.sleep(0.01)
    later = _finish(store, project.id, worker, 2)
    exact = store.oldest_kept(project.id, 2)  # the older of `later`, from the database
    assert exact is not None and exact.id in later
    boundary = Boundary(exact.ended_at, "")

    assert store.purge_operations(project.id, boundary, 2) == 2
    assert _rows_about(store, first[:2])["operations"] == 0
    assert _rows_about(store, first[2:])["operations"] == 1
    assert store.purge_operations(project.id, boundary, 2) == 1
    assert store.purge_operations(project.id, boundary, 2) == 0
    assert _rows_about(store, later)["operations"] == 2


def test_a_count_limit_keeps_exactly_the_newest_even_when_they_ended_together(store, project):
    worker = store.register_worker(project.id, "w", "host", ["default"], {})
    _invoke(store, project.id, n=10)
    _finish(store, project.id, worker, 2)
    together = _finish(store, project.id, worker, 8)  # one transaction: one ended_at

    oldest_kept = store.oldest_kept(project.id, 3)
    assert oldest_kept is not None
    assert store.purge_operations(project.id, oldest_kept, 100) == 7
    kept = store.list_operations(project.id)
    assert len(kept) == 3 and {op.id for op in kept} == set(sorted(together)[-3:])
    assert store.oldest_kept(project.id, 4) is None


def test_each_project_keeps_what_its_own_retention_says(store, project):
    other = store.create_project("other")
    third = store.create_project("third")
    for p in (project, other, third):
        worker = store.register_worker(p.id, "w", "host", ["default"], {})
        _invoke(store, p.id, n=6)
        _finish(store, p.id, worker, 5)
    store.set_retention(other.id, RetentionSettings(max_operations=1))
    store.set_retention(third.id, RetentionSettings(days=36_500, max_operations=10**9))
    settings = Settings(database_url="sqlite://", retention_max_operations=3)

    purged = asyncio.run(purge_round(store, settings, pause_ratio=0))

    assert purged.operations == 2 + 4

    def finished(p):
        return [op for op in store.list_operations(p.id, limit=100) if op.status.is_terminal()]

    assert len(finished(project)) == 3  # the server's default
    assert len(finished(other)) == 1  # its own count
    assert len(finished(third)) == 5  # its own limits: a hundred years, a billion
    for p in (project, other, third):
        assert len(store.list_operations(p.id, status=OperationStatus.QUEUED)) == 1


def test_an_age_limit_purges_only_what_ended_before_it(store, project):
    worker = store.register_worker(project.id, "w", "host", ["default"], {})
    _invoke(store, project.id, n=3)
    old = _finish(store, project.id, worker, 2)
    time.sleep(3.0)
    new = _finish(store, project.id, worker, 1)
    # An age whose limit falls half way between them (1.5 s of slack for a slow machine).
    ended = store.get_operation(project.id, new[0]).ended_at.timestamp()
    age = store.now() - (ended - 1.5)
    settings = Settings(database_url="sqlite://", retention_days=age / 86_400)

    purged = asyncio.run(purge_round(store, settings, pause_ratio=0))

    assert purged.operations == 2
    assert _rows_about(store, old)["operations"] == 0
    assert _rows_about(store, new)["operations"] == 1


def test_old_events_go_but_the_newest_stays_so_ids_keep_growing(store, project):
    _invoke(store, project.id, n=5)
    events = store.list_events(project.id, 0, 100)
    assert len(events) == 6  # the action saved, five operations created
    cutoff = store.now() + 1  # every event is older than this

    assert store.purge_events(cutoff, 2) == 2
    assert store.purge_events(cutoff, 100) == 3
    assert store.purge_events(cutoff, 100) == 0
    (newest,) = store.list_events(project.id, 0, 100)
    assert newest.id == events[-1].id
    # A stream resuming from an id that retention took continues from the oldest kept.
    assert [e.id for e in store.list_events(project.id, events[0].id, 100)] == [newest.id]
    (more,) = _invoke(store, project.id)
    assert store.list_events(project.id, newest.id, 100)[0].entity_id == more.id


# -- through a running server -------------------------------------------------------------
@pytest.fixture
def short_retention(database_url, tmp_path):
    """A server whose finished operations and events live one second."""
    srv = Server(
        database_url=database_url,
        lease_seconds=2.0,
        reap_interval=0.25,
        log_path=tmp_path / "server.log",
        environment={
            "OPRUN_RETENTION_DAYS": str(1.0 / 86_400),
            "OPRUN_RETENTION_INTERVAL": "0.2",
        },
    ).start()
    yield srv
    srv.stop()


def test_a_server_purges_finished_operations_and_events_past_retention(short_retention, tmp_path):
    srv = short_retention
    headers = {"Authorization": f"Bearer {srv.token}"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as api:
        retention = api.get("/v1/projects/current/retention").json()
        assert retention["days"] is None and retention["effective_days"] == 1.0 / 86_400
        worker = Worker(srv, log_path=tmp_path / "worker.log").start()
        try:
            op = api.post("/v1/operations", json={"action": "echo", "parameters": {}}).json()
            done = api.get(f"/v1/operations/{op['id']}:wait", params={"timeout": 30}).json()
            assert done["status"] == "SUCCEEDED", done
        finally:
            worker.stop()
        slow = api.post("/v1/operations", json={"action": "sleep"}).json()  # stays QUEUED
        deadline = time.monotonic() + 20
        while api.get(f"/v1/operations/{op['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the finished operation was never purged"
            time.sleep(0.2)
        assert api.get(f"/v1/operations/{slow['id']}").json()["status"] == "QUEUED"
        # Resuming from the first event (purged by now) starts at the oldest one kept.
        with api.stream("GET", "/v1/events", headers={"Last-Event-ID": "1"}) as stream:
            first = None
            for line in stream.iter_lines():
                if line.startswith("id: ") and line != "id: 1":
                    first = int(line.removeprefix("id: "))
                    break
        assert first is not None and first > 1


def test_an_admin_sets_the_projects_own_retention(api):
    assert api.get("/v1/projects/current/retention").json() == {
        "days": None,
        "max_operations": None,
        "effective_days": None,
        "effective_max_operations": None,
    }
    set_ = api.put("/v1/projects/current/retention", json={"days": 7, "max_operations": 1000})
    assert set_.status_code == 200, set_.text
    assert set_.json()["effective_days"] == 7 and set_.json()["max_operations"] == 1000
    bad = api.put("/v1/projects/current/retention", json={"days": 0})
    assert bad.status_code == 400 and "days" in bad.text
    viewer = api.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()["secret"]
    refused = httpx.put(
        f"{api.base_url}/v1/projects/current/retention",
        json={"days": 1},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert refused.status_code == 403


def test_claim_latency_with_and_without_a_purge_under_way(database_url, tmp_path, figure):
    """A figure, not an assertion on timing: `python -m bench.retention` is the full run."""
    from bench.retention import measure, summary

    samples, before, after = measure(
        database_url, backlog=2_000, windows=4, window=2.0, logs=tmp_path, waiting=6_000
    )

    assert after < before  # the purge ran during its windows
    off, on = summary(samples["without purge"]), summary(samples["during purge"])
    figure(
        f"claim p50 {off['p50']:.1f} ms without a purge, {on['p50']:.1f} ms during one "
        f"({on['p50'] / off['p50']:.2f}x); mean {off['mean']:.1f} vs {on['mean']:.1f} ms "
        f"({on['mean'] / off['mean']:.2f}x); {before - after} of {before} purged meanwhile"
    )
