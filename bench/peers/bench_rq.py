"""RQ with Redis; workers: `rq worker-pool -n 2` (default Worker class: forks a work-horse per job).

Set RQ_WORKER_CLASS=rq.worker.SimpleWorker (read by the rq CLI itself) for the no-fork variant."""

import os
import time

import common
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

DB = 5
URL = f"{common.REDIS_URL}/{DB}"
WORKER = [
    os.path.join(common.VENV_BIN, "rq"),
    "worker-pool",
    "-n",
    "2",
    "--url",
    URL,
    "--logging-level",
    "WARNING",
    "bench",
]


def noop():
    return 1


def main():
    a = common.parse_args()
    conn = Redis.from_url(URL)
    q = Queue("bench", connection=conn)
    conn.flushdb()
    _, t_single = common.timed(lambda: [q.enqueue(noop) for _ in range(a.n)])  # (a) loop
    conn.flushdb()

    def bulk():
        return q.enqueue_many([Queue.prepare_data(noop) for _ in range(a.n)])  # (a) bulk

    _, t_bulk = common.timed(bulk)
    conn.flushdb()
    procs = common.start_workers([WORKER], f"rq-{a.run}")
    try:
        q.enqueue(noop).latest_result(timeout=120)  # workers are up
        reg = q.finished_job_registry
        base = reg.count
        t0 = time.perf_counter()  # (b) bulk enqueue
        jobs = q.enqueue_many([Queue.prepare_data(noop) for _ in range(a.n)])
        t_drain_enq = time.perf_counter() - t0
        common.wait_until(lambda: reg.count >= base + a.n, 3600, 0.02, "rq drain")
        t_drain = time.perf_counter() - t0
        statuses = {j.get_status(refresh=False) for j in Job.fetch_many([j.id for j in jobs], conn)}
        assert statuses == {JobStatus.FINISHED}, statuses
        lat = []  # (c)
        for _ in range(a.rtt):
            t = time.perf_counter()
            res = q.enqueue(noop).latest_result(timeout=30)
            assert res is not None and res.return_value == 1
            lat.append(time.perf_counter() - t)
    finally:
        common.stop_workers(procs)
    wclass = os.environ.get("RQ_WORKER_CLASS")
    common.report(
        dict(
            peer="rq" + ("+" + wclass.rsplit(".", 1)[-1] if wclass else ""),
            run=a.run,
            n=a.n,
            enqueue_per_s=a.n / t_single,
            enqueue_mode="Queue.enqueue loop",
            enqueue_bulk_per_s=a.n / t_bulk,
            bulk_mode="Queue.enqueue_many (one pipeline)",
            drain_per_s=a.n / t_drain,
            drain_s=t_drain,
            drain_enqueue_s=t_drain_enq,
            drain_enqueue_mode="enqueue_many",
            done_signal="FinishedJobRegistry count, then every Job hash status=finished",
            wait_api="Job.latest_result(timeout) (XREAD BLOCK on result stream)",
            **common.rtt_stats(lat),
        )
    )


if __name__ == "__main__":
    import bench_rq

    bench_rq.main()
