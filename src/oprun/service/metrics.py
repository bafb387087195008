"""The server's metrics, in Prometheus' text format (`GET /metrics`).

Two kinds:

- counters and histograms the services (and the API's middleware, for requests)
  add to as things happen in this process: requests, claims and their latency,
  retries, lease lapses, requeues, report batches, operations created, HTTP bytes
  in and out, and the statements and round trips sent to the database (counted by
  the store's engine hooks, `oprun.store.calls`), and the claims parked here now;
- gauges counted when Prometheus scrapes, from the store's indexes
  (`Store.server_stats`: unfinished operations and tasks per queue, the oldest
  wait per queue, workers by status) and its connection pools. They describe the
  whole server, whichever API process answers the scrape.

Each `Metrics` has a registry of its own, so several servers in one process (tests)
never share or collide. See docs/operations.md for every metric's meaning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from oprun.domain.errors import AccessDenied
from oprun.domain.protocol import Assignment, ReportBatch, ReportOutcome
from oprun.domain.roles import Permission
from oprun.service.auth import Principal
from oprun.store import Store
from oprun.store.stats import QueueGauges

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger("oprun.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of `Metrics.exposition()`."""
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Seconds; long polls answer within a minute, so the top buckets are theirs."""
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class _StoreGauges(Collector):
    """Gauges read from the store at each scrape."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return []  # names are fixed; registering must not query the database

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "oprun_database_up", "1 when the database answered this scrape's queries, else 0"
        )
        try:
            stats = self._store.server_stats()
        except Exception as exc:
            log.warning("event=metrics_database_failed error=%s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            yield from _work_gauges(stats.queues, stats.workers)
        yield from self._pools()

    def _pools(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "oprun_db_pool_connections",
            "Database connections of this process's pools, in use or idle",
            labels=["pool", "state"],
        )
        capacity = GaugeMetricFamily(
            "oprun_db_pool_capacity",
            "How many connections each pool may open (its size plus its overflow)",
            labels=["pool"],
        )
        for pool in self._store.pool_stats():
            connections.add_metric([pool.name, "in_use"], pool.in_use)
            connections.add_metric([pool.name, "idle"], pool.idle)
            capacity.add_metric([pool.name], pool.capacity)
        yield connections
        yield capacity


class _DatabaseCalls(Collector):
    """The statements and round trips this process sent the database, read without I/O."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        calls = self._store.database_calls()
        yield CounterMetricFamily(
            "oprun_database_statements",
            "SQL statements this process sent the database",
            value=calls.statements,
        )
        yield CounterMetricFamily(
            "oprun_database_round_trips",
            "Requests this process sent the database and waited for: statements, "
            "BEGIN and COMMIT/ROLLBACK, connection checks",
            value=calls.round_trips,
        )


def _work_gauges(
    queues: Iterable[QueueGauges], workers: dict[tuple[str, str], int]
) -> Iterator[Metric]:
    operations = GaugeMetricFamily(
        "oprun_operations",
        "Unfinished operations by project, queue and status",
        labels=["project", "queue", "status"],
    )
    tasks = GaugeMetricFamily(
        "oprun_tasks",
        "Unfinished tasks by project, queue and status",
        labels=["project", "queue", "status"],
    )
    depth = GaugeMetricFamily(
        "oprun_queue_depth",
        "Tasks waiting in the queue (QUEUED: ready, delayed or waiting on a step)",
        labels=["project", "queue"],
    )
    oldest = GaugeMetricFamily(
        "oprun_queue_oldest_waiting_seconds",
        "How long the queue's longest-waiting ready task has waited for a worker (0: none)",
        labels=["project", "queue"],
    )
    for queue in queues:
        where = [queue.project_id, queue.queue]
        for status, n in queue.operations.items():
            operations.add_metric([*where, status], n)
        for status, n in queue.tasks.items():
            tasks.add_metric([*where, status], n)
        depth.add_metric(where, queue.tasks.get("QUEUED", 0))
        oldest.add_metric(where, queue.oldest_waiting_seconds)
    by_status = GaugeMetricFamily(
        "oprun_workers", "Registered workers by project and status", labels=["project", "status"]
    )
    for (project, status), n in sorted(workers.items()):
        by_status.add_metric([project, status], n)
    yield from (operations, tasks, depth, oldest, by_status)


class Metrics:
    """The metrics of one server: a registry of its own, the counters, the store's gauges."""

    def __init__(self, store: Store) -> None:
        """Metrics over `store` (its gauges are read at each scrape)."""
        self._store = store
        self._operators: str | None = None
        registry = self.registry = CollectorRegistry()
        self.requests = Counter(
            "oprun_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "oprun_http_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until it ended), by method and route",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Counter(
            "oprun_http_request_bytes",
            "Bytes of the HTTP requests read: request line, headers and body",
            registry=registry,
        )
        self.response_bytes = Counter(
            "oprun_http_response_bytes",
            "Bytes of the HTTP responses sent: status line, headers and body",
            registry=registry,
        )
        self.operations_created = Counter(
            "oprun_operations_created",
            "Operations created, by project and queue",
            ["project", "queue"],
            registry=registry,
        )
        self.claim_seconds = Histogram(
            "oprun_claim_duration_seconds",
            "Time the database took to look for and hand out work, per claim attempt",
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self.claims_waiting = Gauge(
            "oprun_claims_waiting",
            "Claims of idle workers parked in this API process until work is published",
            registry=registry,
        )
        self.tasks_claimed = Counter(
            "oprun_tasks_claimed",
            "Tasks handed to workers, by project",
            ["project"],
            registry=registry,
        )
        self.retries = Counter(
            "oprun_task_retries",
            "Tasks handed out again after a failed or lost attempt (attempt 2 and later)",
            ["project"],
            registry=registry,
        )
        self.lease_lapses = Counter(
            "oprun_lease_lapses",
            "Attempts ended by the reaper because their lease lapsed",
            registry=registry,
        )
        self.requeues = Counter(
            "oprun_requeues",
            "Attempts a worker ended without an outcome, whose tasks went back to their "
            "queue: worker_stopped (given back, not counted as an attempt), worker_lost "
            "(a worker given up for lost came back; counted, a task out of attempts fails)",
            ["reason"],
            registry=registry,
        )
        self.report_batch_size = Histogram(
            "oprun_report_batch_size",
            "Reports (task and session) per batch a worker sent",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.reports = Counter(
            "oprun_reports",
            "Task reports applied, by kind and outcome (accepted or refused)",
            ["kind", "outcome"],
            registry=registry,
        )
        # Calls are read before the gauges query the store: a scrape counts in the next one.
        registry.register(_DatabaseCalls(store))
        registry.register(_StoreGauges(store))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    # -- reading ------------------------------------------------------------------------
    def check_reader(self, principal: Principal) -> None:
        """Raise `AccessDenied` unless `principal` may read the server's metrics.

        Metrics describe every project of the server, and tokens belong to one
        project: only an admin token of the server's first project (the one created
        at its first start, whose admin runs the server) may read them. An admin of
        another project would otherwise learn of projects not theirs.
        """
        principal.require(Permission.MANAGE)
        if self._operators is None:
            self._operators = self._store.first_project().id
        if principal.project_id != self._operators:
            raise AccessDenied(
                "metrics describe every project of the server: they need an admin token "
                "of its first project (or OPRUN_METRICS_PUBLIC=1 on the server)",
                needs="server admin",
            )

    def exposition(self) -> bytes:
        """Every metric, in Prometheus' text format (queries the store for the gauges)."""
        return generate_latest(self.registry)

    # -- recording ----------------------------------------------------------------------
    @contextmanager
    def timed_claim(self) -> Iterator[None]:
        """Time one claim attempt on the store."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.claim_seconds.observe(time.perf_counter() - started)

    def claimed(self, project_id: str, assignments: Iterable[Assignment]) -> None:
        """Count work handed out, and which of it is a retry."""
        handed = retried = 0
        for assignment in assignments:
            handed += 1
            retried += assignment.attempt > 1
        if handed:
            self.tasks_claimed.labels(project_id).inc(handed)
        if retried:
            self.retries.labels(project_id).inc(retried)

    def reported(self, batch: ReportBatch, outcomes: Iterable[ReportOutcome]) -> None:
        """Count a report batch: its size and each task report's kind and outcome."""
        self.report_batch_size.observe(len(batch.reports) + len(batch.sessions))
        for report, outcome in zip(batch.reports, outcomes, strict=False):
            self.reports.labels(report.kind, "accepted" if outcome.accepted else "refused").inc()
