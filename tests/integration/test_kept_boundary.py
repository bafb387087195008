"""A count limit's boundary, followed from round to round, equals a walk from the newest.

Each round finishes operations (some committing with an `ended_at` older than the
newest seen, as concurrent transactions do), and may have a user delete one, another
process (or an age limit) purge up to its own boundary, the limit change, or the process
restart; the boundary must always be the oldest of the `keep` newest, whatever happened.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import insert, select, update

from oprun.domain.models import ActionDefinition
from oprun.domain.retention import Boundary
from oprun.store import kept as kept_module
from oprun.store import open_store
from oprun.store import schema as t
from oprun.store.throughput import SEALED_AFTER
from tests.integration._invocations import invoke

_op = t.operations.c
_ev = t.events.c


def _waiting(store, project_id: str, n: int) -> list[str]:
    action, _ = store.save_action(project_id, ActionDefinition(name="a", entrypoint="m:f"))
    return [op.id for op in invoke(store, action, n)]


def _walked(store, project_id: str, keep: int) -> Boundary | None:
    """The boundary from scratch: the `keep`-th newest finished operation."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(_op.ended_at, _op.id)
            .where(_op.project_id == project_id, _op.ended_at.isnot(None))
            .order_by(_op.ended_at.desc(), _op.id.desc())
            .offset(keep - 1)
            .limit(1)
        ).first()
    return None if row is None else Boundary(row[0], row[1])


def _finish_late(store, op_ids: list[str], ended_at: float) -> None:
    """End operations together as a transaction that began at `ended_at` would."""
    with store.engine.begin() as conn:
        conn.execute(
            update(t.operations)
            .where(_op.id.in_(op_ids))
            .values(status="CANCELED", ended_at=ended_at, updated_at=ended_at)
        )


def _an_old_event(store, project_id: str) -> None:
    """An event older than any transaction: what a database that ran a while has."""
    with store.engine.begin() as conn:
        conn.execute(
            insert(t.events).values(
                project_id=project_id,
                type="test",
                entity_id=project_id,
                data={},
                at=store.now() - 10 * SEALED_AFTER,
            )
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_followed_boundary_is_the_walked_one_whatever_happens(
    store, project, monkeypatch, seed
):
    monkeypatch.setattr(kept_module, "LADDER", 4)  # a short ladder: refilled often
    walks = []
    walk = kept_module._walk
    monkeypatch.setattr(kept_module, "_walk", lambda *args: walks.append(args[2]) or walk(*args))
    rng = random.Random(seed)
    _an_old_event(store, project.id)
    waiting = _waiting(store, project.id, 260)
    url = store.engine.url.render_as_string(hide_password=False)
    other = open_store(url, migrate=False)  # another API process over the same database
    ours = store
    keep = 12
    followed = 0
    try:
        for round_ in range(45):
            # Operations finish: one by one, several in one transaction (one ended_at),
            # and some committing late, with an ended_at older than the newest seen.
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                ours.cancel_operation(project.id, waiting.pop(), "test")
            if rng.random() < 0.5:
                _finish_late(
                    store,
                    [waiting.pop() for _ in range(rng.randint(1, 3))],
                    store.now() - rng.uniform(0, SEALED_AFTER / 2),
                )
            if rng.random() < 0.3:
                together = [waiting.pop() for _ in range(rng.randint(2, 4))]
                _finish_late(store, together, store.now())
            if rng.random() < 0.12:  # a user deletes a finished operation, maybe a kept one
                finished = [
                    op.id
                    for op in store.list_operations(project.id, limit=500)
                    if op.status.is_terminal()
                ]
                newest = _walked(store, project.id, 1)  # above any ladder, most rounds
                if finished:
                    gone = rng.choice([rng.choice(finished), newest.id if newest else None])
                    store.delete_operation(project.id, gone or finished[0])
            if rng.random() < 0.2:  # another process purges up to its own boundary
                theirs = other.oldest_kept(project.id, keep)
                if theirs is not None:
                    other.purge_operations(project.id, theirs, rng.randint(1, 5))
            if rng.random() < 0.1:  # an age limit purges the oldest finished ones
                with store.engine.connect() as conn:
                    first = conn.execute(
                        select(_op.ended_at)
                        .where(_op.project_id == project.id, _op.ended_at.isnot(None))
                        .order_by(_op.ended_at)
                        .limit(1)
                    ).scalar()
                if first is not None:
                    ours.purge_operations(project.id, Boundary(first + 1e-6, ""), 100)
            if rng.random() < 0.05:
                keep = rng.choice([3, 12, 25])
            if rng.random() < 0.05:  # this process restarts
                if ours is not store:
                    ours.close()
                ours = open_store(url, migrate=False)
            before = len(walks)
            found = ours.oldest_kept(project.id, keep)
            followed += len(walks) == before
            assert found == _walked(store, project.id, keep), f"round {round_}, keep {keep}"
            if found is not None and rng.random() < 0.5:
                ours.purge_operations(project.id, found, rng.randint(1, 10))
                assert _walked(store, project.id, keep) == found  # the kept ones all stay
    finally:
        other.close()
        if ours is not store:
            ours.close()
    assert followed >= 10  # many rounds followed the boundary rather than walking to it


def test_a_process_walks_again_when_it_cannot_tell_what_was_deleted(store, project):
    ops = _waiting(store, project.id, 6)
    for op_id in ops:
        store.cancel_operation(project.id, op_id, "test")
    # No event old enough to place the deletions seen: every round walks, and is right.
    assert store.oldest_kept(project.id, 3) == _walked(store, project.id, 3)
    kept = _walked(store, project.id, 3)
    store.delete_operation(project.id, kept.id)
    assert store.oldest_kept(project.id, 3) == _walked(store, project.id, 3) != kept


def test_a_user_deleting_the_newest_kept_operation_moves_the_boundary_back(
    store, project, monkeypatch
):
    monkeypatch.setattr(kept_module, "LADDER", 2)  # the newest is above the ladder
    _an_old_event(store, project.id)
    for op_id in _waiting(store, project.id, 10):
        store.cancel_operation(project.id, op_id, "test")
    first = store.oldest_kept(project.id, 5)
    assert first == _walked(store, project.id, 5)
    assert store.oldest_kept(project.id, 5) == first  # followed: nothing changed
    store.delete_operation(project.id, _walked(store, project.id, 1).id)
    moved = store.oldest_kept(project.id, 5)
    assert moved == _walked(store, project.id, 5) and moved < first


def test_rounds_minutes_apart_place_deletions_by_the_ids_they_saw(store, project, monkeypatch):
    """Past the first rounds, a process bounds the events to look at by what it saw."""
    monkeypatch.setattr(kept_module, "LADDER", 2)  # the newest is above the ladder
    _an_old_event(store, project.id)
    for op_id in _waiting(store, project.id, 10):
        store.cancel_operation(project.id, op_id, "test")
    boundaries = kept_module.KeptBoundaries()
    start = store.now()
    clock = {"at": start}

    def oldest_kept(keep: int) -> Boundary | None:
        with store._snapshot() as conn:
            return boundaries.oldest_kept(conn, lambda _: clock["at"], project.id, keep)

    first = oldest_kept(5)
    for minutes in (5, 10, 15):  # each round sees the ids the round before last saw
        clock["at"] = start + 60 * minutes
        assert oldest_kept(5) == first
    store.delete_operation(project.id, _walked(store, project.id, 1).id)
    clock["at"] = start + 60 * 20
    moved = oldest_kept(5)
    assert moved == _walked(store, project.id, 5) and moved < first


def _finished(store, project_id: str) -> int:
    with store.engine.connect() as conn:
        return len(
            conn.execute(
                select(_op.id).where(_op.project_id == project_id, _op.ended_at.isnot(None))
            ).all()
        )


def test_an_idle_project_at_its_limit_is_purged_without_a_query_until_one_finishes(store, project):
    """Nothing before the boundary and nothing finished since: the purge reads nothing.

    Then one operation finishes (committing with an `ended_at` older than the boundary,
    as a transaction that began earlier does) and another one after it: the next round
    purges down to the limit again.
    """
    _an_old_event(store, project.id)
    waiting = _waiting(store, project.id, 8)
    for op_id in waiting[:5]:
        store.cancel_operation(project.id, op_id, "test")

    def purge_round() -> int:
        boundary = store.oldest_kept(project.id, 3)
        assert boundary == _walked(store, project.id, 3)
        purged = 0
        while done := store.purge_operations(project.id, boundary, 100):
            purged += done
        return purged

    assert purge_round() == 2
    assert _finished(store, project.id) == 3
    before = store.database_calls().statements
    boundary = store.oldest_kept(project.id, 3)
    followed = store.database_calls().statements
    assert store.purge_operations(project.id, boundary, 100) == 0
    assert store.database_calls().statements == followed > before  # the purge read nothing

    _finish_late(store, [waiting[5]], boundary.ended_at - 1)  # sorts before the boundary
    store.cancel_operation(project.id, waiting[6], "test")
    assert purge_round() == 2
    assert _finished(store, project.id) == 3
    assert purge_round() == 0


def test_the_deletion_check_reads_events_through_indexes_only(store, project):
    """Each of its reads is a search of an index, never a scan of the events table.

    SQLite reads `min` and `max` from an index only when each is alone in its SELECT;
    asked for both at once, it scans the whole table, every round of every process.
    """
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans (PostgreSQL's depend on its statistics)")
    from oprun.store import deletions

    reads = [
        deletions._ENDS,
        deletions._PROBES.bindparams(newest=10, oldest=1),
        select(_ev.seq).where(_ev.project_id == "p", _ev.seq > 1, deletions._DELETED),
    ]
    with store.engine.connect() as conn:
        for statement in reads:
            sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            assert not [step for step in plan if step.startswith("SCAN events")], (sql, plan)
