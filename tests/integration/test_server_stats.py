"""The gauges of `/metrics` (`Store.server_stats`) equal a count from scratch over every row.

The store counts them from indexes (unfinished operations by queue from the status
index's entries, a queue's longest wait from the first waiting entry of its range);
here the same figures are counted from all the rows, after a mix of creates on
several queues, claims, starts, ends, delays, a wait on a retry's backoff and a
deletion.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update

from oprun.domain.models import ActionDefinition
from oprun.domain.protocol import Report
from oprun.store import schema as t
from oprun.store.stats import UNFINISHED
from tests.integration._invocations import invoke

UNFINISHED_STATUSES = [s.value for s in UNFINISHED]


def _from_scratch(store, now: float):
    """(operations, tasks) by (queue name, status), and the oldest ready time by queue."""
    with store.engine.connect() as conn:
        names = dict(conn.execute(select(t.queues.c.id, t.queues.c.name)).all())
        ops = Counter(
            (queue, status)
            for queue, status in conn.execute(
                select(t.operations.c.queue_name, t.operations.c.status)
            )
            if status in UNFINISHED_STATUSES
        )
        tasks: Counter = Counter()
        ready: dict[str, float] = {}
        for qid, status, available_at in conn.execute(
            select(t.tasks.c.queue_id, t.tasks.c.status, t.tasks.c.available_at)
        ):
            if status in UNFINISHED_STATUSES:
                tasks[names[qid], status] += 1
            if status == "QUEUED" and available_at <= now:
                ready[names[qid]] = min(ready.get(names[qid], available_at), available_at)
    return ops, tasks, ready


def _check(store) -> None:
    stats = store.server_stats()
    ops, tasks, ready = _from_scratch(store, stats.at)
    assert stats.queues, "no queue counted"
    for queue in stats.queues:
        assert queue.operations == {s: ops[queue.queue, s] for s in UNFINISHED_STATUSES}
        assert queue.tasks == {s: tasks[queue.queue, s] for s in UNFINISHED_STATUSES}
        waited = stats.at - ready[queue.queue] if queue.queue in ready else 0.0
        assert abs(queue.oldest_waiting_seconds - max(0.0, waited)) < 1e-6, queue


def test_the_gauges_equal_a_count_from_scratch_after_a_mix_of_work(store, project):
    action, _ = store.save_action(project.id, ActionDefinition(name="a", entrypoint="m:f"))
    _check(store)  # nothing yet (the default queue, all zeros)
    batch = invoke(store, action, 12, queue="batch")
    later = invoke(store, action, 4, queue="later")
    default = invoke(store, action, 5)
    _check(store)

    worker = store.register_worker(project.id, "w", "host", ["batch", "default"], {})
    got = store.claim(worker.id, project.id, ["batch", "default"], 9, 600.0)
    assert got
    store.apply_reports(
        worker.id,
        [
            Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind="running")
            for a in got[:6]
        ],
    )
    _check(store)
    store.apply_reports(
        worker.id,
        [
            Report(session_action_id=a.session_action_id, lease_epoch=a.lease_epoch, kind=kind)
            for a, kind in zip(
                got[:4], ("succeeded", "failed", "succeeded", "succeeded"), strict=True
            )
        ],
    )
    ended = {a.operation_id for a in got[:4]}
    canceled = [next(op.id for op in ops if op.id not in ended) for ops in (batch, default)]
    for op_id in canceled:
        store.cancel_operation(project.id, op_id, "test")
    _check(store)

    # Every waiting task of "later" waits out a backoff: it has tasks, none of them ready.
    with store.engine.begin() as conn:
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.operation_id.in_([op.id for op in later]))
            .values(available_at=store.now() + 600)
        )
    stats = store.server_stats()
    assert {q.queue: q.oldest_waiting_seconds for q in stats.queues}["later"] == 0.0
    _check(store)

    store.delete_operation(project.id, got[0].operation_id)  # it succeeded
    _check(store)
