"""A queue's last hour of throughput, kept in part by each process, equals a count from scratch."""

from __future__ import annotations

import math

from sqlalchemy import Integer, bindparam, cast, func, select, update

from oprun.domain.models import ActionDefinition
from oprun.store import open_store
from oprun.store import schema as t
from oprun.store.throughput import MINUTES, SEALED_AFTER, WINDOW
from tests.integration._invocations import invoke

ENDED = ("SUCCEEDED", "FAILED", "CANCELED")


def _ended_tasks(store, project_id: str, queue: str, n: int) -> list[str]:
    """`n` canceled operations' task ids on `queue` (each task ended, to be re-timed)."""
    action, _ = store.save_action(
        project_id, ActionDefinition(name="a", entrypoint="oprun.examples:noop")
    )
    ops = [op.id for op in invoke(store, action, n, queue)]
    for op_id in ops:
        store.cancel_operation(project_id, op_id, "test")
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                select(t.tasks.c.id).where(t.tasks.c.operation_id.in_(ops)).order_by(t.tasks.c.id)
            ).scalars()
        )


def _end_at(store, task_ids: list[str], ends: list[float]) -> None:
    """Task `task_ids[k]` ended at `ends[k]`, in one of the three ended statuses."""
    with store.engine.begin() as conn:
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == bindparam("tid"))
            .values(updated_at=bindparam("at"), status=bindparam("st")),
            [
                {"tid": tid, "at": at, "st": ENDED[k % 3]}
                for k, (tid, at) in enumerate(zip(task_ids, ends, strict=True))
            ],
        )


def _from_scratch(store, ids: list[str], now: float):
    """The whole hour counted from the index, as every count was made before ends were kept."""
    tasks = t.tasks.c
    start = now - WINDOW
    offset = (tasks.updated_at - start) / 60
    by_status = {qid: dict.fromkeys(ENDED, 0) for qid in ids}
    buckets = {qid: [0] * MINUTES for qid in ids}
    with store.engine.connect() as conn:
        minute = cast(offset, Integer) if conn.dialect.name == "sqlite" else func.floor(offset)
        for qid, status, index, n in conn.execute(
            select(tasks.queue_id, tasks.status, minute, func.count())
            .where(tasks.queue_id.in_(ids), t.TASK_ENDED, tasks.updated_at >= start)
            .group_by(tasks.queue_id, tasks.status, minute)
        ):
            by_status[qid][status] += n
            buckets[qid][min(int(index), MINUTES - 1)] += n
    return by_status, buckets


def _counted(store, ids: list[str], now: float):
    with store.read() as conn:
        project_id = conn.execute(
            select(t.queues.c.project_id).where(t.queues.c.id == ids[0])
        ).scalar_one()
        ended, buckets = store._ended_by_minute(conn, project_id, ids, now)
    return {qid: {s: ended[qid][s] for s in ENDED} for qid in ids}, buckets


def _edges(now: float) -> list[float]:
    """Every minute edge of the window before `now`, an ulp either side, and the sealed edge."""
    found = []
    for at in [now - WINDOW + 60 * i for i in range(MINUTES + 1)] + [now - SEALED_AFTER]:
        found += [math.nextafter(at, -math.inf), at, math.nextafter(at, math.inf)]
    return found


def test_kept_ends_count_as_a_count_from_scratch_at_every_minute_edge(store, project):
    default = store.configure_queue(project.id, "default", 0, None).id
    other = store.configure_queue(project.id, "other", 0, None).id
    ids = [default, other]
    first = store.now()
    # Each count's `now`, oldest first, then the clock stepping back a little and a lot.
    nows = [first, first + 0.4, first + 61.7, first + 600.25, first + 3700.0]
    nows += [first + 3650.5, first + 100.0]
    ends = [at for now in nows for at in _edges(now)]
    ends += [first - 2 * WINDOW, first + 5 * WINDOW]  # long before any window, and after
    spare = _ended_tasks(store, project.id, "default", len(ends) // 2)
    spare += _ended_tasks(store, project.id, "other", len(ends) - len(spare))
    _end_at(store, spare, ends)
    restarted = open_store(store.engine.url.render_as_string(hide_password=False), migrate=False)
    try:
        for now in nows:
            expected = _from_scratch(store, ids, now)
            assert _counted(store, ids, now) == expected, f"at now={now - first:+.2f}"
            # A process that kept nothing yet (another API process, or after a restart).
            assert _counted(restarted, ids, now) == expected
            assert sum(map(sum, expected[1].values())) > 0
    finally:
        restarted.close()


def test_ends_that_arrive_between_counts_are_counted_once(store, project):
    default = store.configure_queue(project.id, "default", 0, None).id
    waiting = _ended_tasks(store, project.id, "default", 400)
    now = store.now()
    # Spare tasks, ended long before any window: re-timing one below is a new end.
    _end_at(store, waiting, [now - 2 * WINDOW] * len(waiting))
    _end_at(store, waiting[:100], [now - WINDOW + 35.5 * k for k in range(100)])
    for step in range(1, 7):
        now += 45.0
        # Ends commit no earlier than `SEALED_AFTER` before a count's clock: some right
        # at that edge, some in the live part, one in each minute edge's ulp.
        fresh = waiting[step * 50 : step * 50 + 50]
        sealed_edge = now - SEALED_AFTER
        _end_at(
            store,
            fresh,
            [sealed_edge, math.nextafter(sealed_edge, math.inf)]
            + [sealed_edge + 2.5 * k for k in range(1, 48)]
            + [now - WINDOW + 60 * 59],
        )
        assert _counted(store, [default], now) == _from_scratch(store, [default], now)


def test_queue_stats_of_two_processes_agree(store, project):
    store.configure_queue(project.id, "default", 0, None)
    tasks = _ended_tasks(store, project.id, "default", 30)
    now = store.now()
    _end_at(store, tasks[:20], [now - 60 * k - 7.5 for k in range(20)])
    _end_at(store, tasks[20:], [now - 2 * WINDOW] * 10)  # long before the window
    (kept,) = store.queue_stats(project.id)
    _end_at(store, tasks[20:], [store.now()] * 10)  # ended now: in the live part
    other = open_store(store.engine.url.render_as_string(hide_password=False), migrate=False)
    try:
        (mine,) = store.queue_stats(project.id)
        (theirs,) = other.queue_stats(project.id)
    finally:
        other.close()
    assert sum(kept.throughput) == 20
    assert sum(mine.throughput) == sum(theirs.throughput) == 30
    assert mine.throughput == theirs.throughput
    assert (mine.succeeded, mine.failed) == (theirs.succeeded, theirs.failed) == (11, 10)


def _backdate_operations(store, op_ids: list[str], ended_at: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(t.operations).where(t.operations.c.id.in_(op_ids)).values(ended_at=ended_at)
        )


def _old_event(store, project_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            t.events.insert().values(
                project_id=project_id, type="test", entity_id="x", data={}, at=1.0
            )
        )


def test_a_count_forgets_the_ends_of_deleted_and_purged_operations(store, project):
    from oprun.domain.retention import Boundary

    store.configure_queue(project.id, "default", 0, None)
    _old_event(store, project.id)  # a database that ran a while has old events
    tasks = _ended_tasks(store, project.id, "default", 12)
    with store.engine.connect() as conn:
        op_of = {
            task_id: op_id
            for task_id, op_id in conn.execute(
                select(t.tasks.c.id, t.tasks.c.operation_id).where(t.tasks.c.id.in_(tasks))
            )
        }
    now = store.now()
    # One operation ended two hours ago (older than the window); the others' tasks ended
    # in the window, in minutes already final, each operation when its task did.
    ends = [now - 2 * WINDOW] + [now - 300 - 60 * k for k in range(1, 12)]
    _end_at(store, tasks, ends)
    for task_id, at in zip(tasks, ends, strict=True):
        _backdate_operations(store, [op_of[task_id]], at)
    other = open_store(store.engine.url.render_as_string(hide_password=False), migrate=False)
    try:
        (before,) = store.queue_stats(project.id)
        assert sum(before.throughput) == 11
        store.delete_operation(project.id, op_of[tasks[5]])  # a user deletes one
        (mine,) = store.queue_stats(project.id)
        (theirs,) = other.queue_stats(project.id)
        assert sum(mine.throughput) == sum(theirs.throughput) == 10
        assert mine.throughput == theirs.throughput
        # A purge by count deletes the oldest: the one before the window and two in it.
        oldest_two = sorted(ends[1:])[:2]
        purged = store.purge_operations(project.id, Boundary(oldest_two[1] + 1, ""), 100)
        assert purged == 3
        (mine,) = store.queue_stats(project.id)
        (theirs,) = other.queue_stats(project.id)
        assert sum(mine.throughput) == sum(theirs.throughput) == 8
        assert mine.throughput == theirs.throughput
    finally:
        other.close()


def test_a_deletion_seen_through_one_page_of_queues_is_not_missed_by_the_next(store, project):
    store.configure_queue(project.id, "a", 0, None)
    store.configure_queue(project.id, "b", 0, None)
    _old_event(store, project.id)  # a database that ran a while has old events
    old = _ended_tasks(store, project.id, "a", 1)
    recent = _ended_tasks(store, project.id, "b", 2)
    now = store.now()
    _end_at(store, old + recent, [now - 2 * WINDOW, now - 600, now - 900])
    with store.engine.begin() as conn:  # each operation ended when its task did
        for task_id, at in zip(old + recent, [now - 2 * WINDOW, now - 600, now - 900], strict=True):
            op_id = conn.execute(
                select(t.tasks.c.operation_id).where(t.tasks.c.id == task_id)
            ).scalar_one()
            conn.execute(update(t.operations).where(t.operations.c.id == op_id).values(ended_at=at))
        deleted = conn.execute(
            select(t.tasks.c.operation_id).where(t.tasks.c.id == recent[0])
        ).scalar_one()
    (a,) = store.queue_stats(project.id, limit=1)
    (b,) = store.queue_stats(project.id, after=(a.priority, a.name), limit=1)
    assert (a.name, sum(a.throughput), b.name, sum(b.throughput)) == ("a", 0, "b", 2)
    store.delete_operation(project.id, deleted)
    store.queue_stats(project.id, limit=1)  # sees the deletion first
    (b,) = store.queue_stats(project.id, after=(a.priority, a.name), limit=1)
    assert sum(b.throughput) == 1
