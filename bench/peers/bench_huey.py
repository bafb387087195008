"""Huey with RedisHuey; consumer: huey_consumer -w 2 -k process.

BENCH_HUEY_NOTIFY=1 turns on RedisHuey(notify_result=True) (BLPOP-based result wait);
the default Result.get(blocking=True) polls with backoff starting at 50 ms."""

import os
import time

import common
from huey import RedisHuey

DB = 4
NOTIFY = os.environ.get("BENCH_HUEY_NOTIFY") == "1"
huey = RedisHuey("bench", url=f"{common.REDIS_URL}/{DB}", notify_result=NOTIFY)


@huey.task()
def noop():
    return 1  # huey does not store None results unless store_none=True


WORKER = [
    os.path.join(common.VENV_BIN, "huey_consumer"),
    "bench_huey.huey",
    "-w",
    "2",
    "-k",
    "process",
    "-q",
]


def enqueue(n):
    # No bulk API: task.map() enqueues one by one.
    return [noop() for _ in range(n)]


def main():
    a = common.parse_args()
    huey.storage.conn.flushdb()
    _, t_enq = common.timed(lambda: enqueue(a.n))  # (a)
    huey.storage.conn.flushdb()
    procs = common.start_workers([WORKER], f"huey-{a.run}")
    try:
        noop().get(blocking=True, timeout=120)  # consumer is up
        base = huey.storage.result_store_size()
        t0 = time.perf_counter()  # (b)
        results = enqueue(a.n)
        t_drain_enq = time.perf_counter() - t0
        common.wait_until(
            lambda: huey.storage.result_store_size() >= base + a.n, 600, 0.01, "huey drain"
        )
        t_drain = time.perf_counter() - t0
        assert all(r.get(preserve=True) == 1 for r in results)
        lat = []  # (c)
        for _ in range(a.rtt):
            t = time.perf_counter()
            assert noop().get(blocking=True, timeout=30) == 1
            lat.append(time.perf_counter() - t)
    finally:
        common.stop_workers(procs)
    common.report(
        dict(
            peer="huey" + ("+notify_result" if NOTIFY else ""),
            run=a.run,
            n=a.n,
            enqueue_per_s=a.n / t_enq,
            enqueue_mode="task() loop (no bulk API)",
            drain_per_s=a.n / t_drain,
            drain_s=t_drain,
            drain_enqueue_s=t_drain_enq,
            done_signal="result-store size (HLEN) reaches N; then every Result checked",
            wait_api="Result.get(blocking=True)"
            + (" with notify_result (BLPOP)" if NOTIFY else " (polls, 50 ms x1.15 backoff)"),
            **common.rtt_stats(lat),
        )
    )


if __name__ == "__main__":
    import bench_huey

    bench_huey.main()
