"""Procrastinate 3 (PostgreSQL, psycopg 3); workers: 2 processes x `procrastinate worker -c 1`.

Procrastinate stores no return values; the durable per-job row in procrastinate_jobs
(status todo/doing/succeeded/...) is the status mechanism we observe."""

import asyncio
import os
import time

import common
import psycopg
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

app = App(connector=PsycopgConnector(conninfo=common.PG_DSN))


@app.task(queue="bench", name="noop")
async def noop():
    return None


WORKER = [
    os.path.join(common.VENV_BIN, "procrastinate"),
    "--app=bench_procrastinate.app",
    "--log-level",
    "warning",
    "worker",
    "-q",
    "bench",
    "-c",
    "1",
]
POLL = 0.001  # no wait-for-result API: we poll get_job_status_async every 1 ms
DRAIN_POLL = 0.1  # list_queues_async costs ~6 ms at 10k rows; polling faster steals worker CPU


def setup_db():
    admin = common.PG_DSN.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        if not c.execute("select 1 from pg_database where datname='bench'").fetchone():
            c.execute("create database bench")
    with psycopg.connect(common.PG_DSN, autocommit=True) as c:
        if not c.execute("select to_regclass('procrastinate_jobs')").fetchone()[0]:
            c.execute(SchemaManager.get_schema())


def truncate():
    with psycopg.connect(common.PG_DSN, autocommit=True) as c:
        c.execute(
            "truncate procrastinate_jobs, procrastinate_events, procrastinate_workers cascade"
        )
        c.execute("vacuum analyze procrastinate_jobs")


async def succeeded():
    rows = await app.job_manager.list_queues_async(queue="bench")
    return rows[0]["succeeded"] if rows else 0


async def bench(a):
    async with app.open_async():
        t = time.perf_counter()  # (a) loop
        for _ in range(a.n):
            await noop.defer_async()
        t_single = time.perf_counter() - t
        truncate()
        t = time.perf_counter()  # (a) bulk
        await noop.batch_defer_async(*({} for _ in range(a.n)))
        t_bulk = time.perf_counter() - t
        truncate()
        procs = common.start_workers([WORKER, WORKER], f"procrastinate-{a.run}")
        try:
            jid = await noop.defer_async()  # workers are up
            while await app.job_manager.get_job_status_async(jid) != Status.SUCCEEDED:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            base = await succeeded()
            t0 = time.perf_counter()  # (b) bulk enqueue
            await noop.batch_defer_async(*({} for _ in range(a.n)))
            t_drain_enq = time.perf_counter() - t0
            while await succeeded() < base + a.n:  # noqa: ASYNC110
                await asyncio.sleep(DRAIN_POLL)
            t_drain = time.perf_counter() - t0
            lat = []  # (c)
            for _ in range(a.rtt):
                t = time.perf_counter()
                jid = await noop.defer_async()
                while await app.job_manager.get_job_status_async(jid) != Status.SUCCEEDED:  # noqa: ASYNC110
                    await asyncio.sleep(POLL)
                lat.append(time.perf_counter() - t)
        finally:
            common.stop_workers(procs)
    common.report(
        dict(
            peer="procrastinate",
            run=a.run,
            n=a.n,
            enqueue_per_s=a.n / t_single,
            enqueue_mode="defer_async loop (1 txn each)",
            enqueue_bulk_per_s=a.n / t_bulk,
            bulk_mode="batch_defer_async (1 statement)",
            drain_per_s=a.n / t_drain,
            drain_s=t_drain,
            drain_enqueue_s=t_drain_enq,
            drain_enqueue_mode="batch_defer_async",
            done_signal="job_manager.list_queues_async succeeded count (procrastinate_jobs.status), polled every 100 ms",
            wait_api="get_job_status_async polled every 1 ms (no wait API, no result store)",
            **common.rtt_stats(lat),
        )
    )


def main():
    a = common.parse_args()
    setup_db()
    truncate()
    asyncio.run(bench(a))


if __name__ == "__main__":
    import bench_procrastinate

    bench_procrastinate.main()
