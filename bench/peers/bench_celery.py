"""Celery 5 with Redis broker + Redis result backend; worker: prefork, -c 2."""

import os
import time

import common
import redis
from celery import Celery
from celery.result import ResultSet

BROKER_DB, BACKEND_DB = 1, 2
app = Celery(
    "bench_celery",
    broker=f"{common.REDIS_URL}/{BROKER_DB}",
    backend=f"{common.REDIS_URL}/{BACKEND_DB}",
)
app.conf.update(
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop():
    return 1


WORKER = [
    os.path.join(common.VENV_BIN, "celery"),
    "-A",
    "bench_celery",
    "worker",
    "-P",
    "prefork",
    "-c",
    "2",
    "-Q",
    "bench",
    "--loglevel",
    "WARNING",
]


def flush():
    for db in (BROKER_DB, BACKEND_DB):
        redis.Redis.from_url(f"{common.REDIS_URL}/{db}").flushdb()


def enqueue(n):
    # Celery has no bulk publish: group()/chunks still publish one message per task
    # (chunks packs several calls into ONE task, which changes semantics), so loop.
    return [noop.apply_async() for _ in range(n)]


def main():
    a = common.parse_args()
    flush()
    _, t_enq = common.timed(lambda: enqueue(a.n))  # (a)
    flush()
    procs = common.start_workers([WORKER], f"celery-{a.run}")
    try:
        noop.delay().get(timeout=120)  # worker is up
        t0 = time.perf_counter()  # (b)
        results = enqueue(a.n)
        t_drain_enq = time.perf_counter() - t0
        ResultSet(results).join_native(timeout=600, interval=0.01)
        t_drain = time.perf_counter() - t0
        lat = []  # (c)
        for _ in range(a.rtt):
            t = time.perf_counter()
            noop.delay().get(timeout=30)
            lat.append(time.perf_counter() - t)
    finally:
        common.stop_workers(procs)
    common.report(
        dict(
            peer="celery",
            run=a.run,
            n=a.n,
            enqueue_per_s=a.n / t_enq,
            enqueue_mode="apply_async loop (no bulk API)",
            drain_per_s=a.n / t_drain,
            drain_s=t_drain,
            drain_enqueue_s=t_drain_enq,
            done_signal="ResultSet.join_native on Redis result backend",
            wait_api="AsyncResult.get (Redis pub/sub)",
            **common.rtt_stats(lat),
        )
    )


if __name__ == "__main__":
    import bench_celery  # run under the importable module name the worker uses

    bench_celery.main()
