"""Dramatiq with RedisBroker + Results middleware (RedisBackend); worker: -p 2 -t 1."""

import os
import time

import common
import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

BROKER_DB, RESULT_DB = 3, 6
broker = RedisBroker(url=f"{common.REDIS_URL}/{BROKER_DB}")
broker.add_middleware(Results(backend=RedisBackend(url=f"{common.REDIS_URL}/{RESULT_DB}")))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", store_results=True)
def noop():
    return 1


THREADS = os.environ.get("BENCH_DRAMATIQ_THREADS", "1")  # dramatiq's own default is 8
WORKER = [
    os.path.join(common.VENV_BIN, "dramatiq"),
    "bench_dramatiq",
    "-p",
    "2",
    "-t",
    THREADS,
    "-Q",
    "bench",
]


def flush():
    for db in (BROKER_DB, RESULT_DB):
        redis.Redis.from_url(f"{common.REDIS_URL}/{db}").flushdb()


def enqueue(n):
    # No bulk API: dramatiq.group(...).run() also sends message by message.
    return [noop.send() for _ in range(n)]


def main():
    a = common.parse_args()
    flush()
    _, t_enq = common.timed(lambda: enqueue(a.n))  # (a)
    flush()
    procs = common.start_workers([WORKER], f"dramatiq-{a.run}")
    try:
        noop.send().get_result(block=True, timeout=120_000)  # workers are up
        t0 = time.perf_counter()  # (b)
        msgs = enqueue(a.n)
        t_drain_enq = time.perf_counter() - t0
        for m in msgs:
            assert m.get_result(block=True, timeout=600_000) == 1
        t_drain = time.perf_counter() - t0
        lat = []  # (c)
        for _ in range(a.rtt):
            t = time.perf_counter()
            noop.send().get_result(block=True, timeout=30_000)
            lat.append(time.perf_counter() - t)
    finally:
        common.stop_workers(procs)
    common.report(
        dict(
            peer="dramatiq" + ("" if THREADS == "1" else f"+t{THREADS}"),
            run=a.run,
            n=a.n,
            enqueue_per_s=a.n / t_enq,
            enqueue_mode="actor.send loop (no bulk API)",
            drain_per_s=a.n / t_drain,
            drain_s=t_drain,
            drain_enqueue_s=t_drain_enq,
            done_signal="Message.get_result(block=True) for every message (Results/RedisBackend)",
            wait_api="Message.get_result(block=True)",
            **common.rtt_stats(lat),
        )
    )


if __name__ == "__main__":
    import bench_dramatiq

    bench_dramatiq.main()
