"""A worker's own metrics: served by `oprun worker --metrics-port N` in Prometheus' format.

- slots: `oprun_worker_slots` (its concurrency), `oprun_worker_slots_busy`;
- children: `oprun_worker_child_restarts_total` (python children started to replace
  one that died or could not be used again);
- reports: `oprun_worker_report_lag_seconds` (how long the oldest report the server
  has not answered yet has waited), `oprun_worker_reports_sent_total`;
- the server: `oprun_worker_server_reachable` (1/0),
  `oprun_worker_server_last_success_age_seconds`, `oprun_worker_server_calls_total`
  by call and outcome, `oprun_worker_claims_total`, `oprun_worker_tasks_claimed_total`.

The calls are observed by `ObservedClient`, a `WorkerClient` that records how each
call ended. A call the client retries (the server is down or failing) has not ended:
the worker counts the server unreachable once such a call has taken longer than one
attempt can, or once a call failed for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import httpx
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oprun.domain.errors import OprunError, ServerError, Throttled, Unavailable
from oprun.domain.models import Worker
from oprun.domain.protocol import (
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    ReportBatchResponse,
    WorkerRegistration,
)
from oprun.worker.client import REQUEST_TIMEOUT, WorkerClient

T = TypeVar("T")

ATTEMPT_SLACK = 10.0
"""Beyond its wait and request timeout, how long a call may take before it must be
a retry (connecting, and the server's own long-poll overrun)."""


class WorkerMetrics(Collector):
    """A worker's metrics, in a registry of its own."""

    def __init__(self) -> None:
        """Empty metrics; `bind` tells them where the worker's state is."""
        self._slots_total: Callable[[], int] = lambda: 0
        self._slots_busy: Callable[[], int] = lambda: 0
        self._report_lag: Callable[[], float] = lambda: 0.0
        self._reports_sent: Callable[[], int] = lambda: 0
        self._child_restarts: Callable[[], int] = lambda: 0
        self._lock = threading.Lock()
        self._last_success: float | None = None
        self._failed = False
        self._pending: dict[int, float] = {}  # call id -> monotonic deadline
        self._next_call = 0
        registry = self.registry = CollectorRegistry()
        self.calls = Counter(
            "oprun_worker_server_calls",
            "Calls to the server that ended, by call and outcome (ok, refused, failed)",
            ["call", "outcome"],
            registry=registry,
        )
        self.claims = Counter(
            "oprun_worker_claims", "Claims answered by the server", registry=registry
        )
        self.tasks_claimed = Counter(
            "oprun_worker_tasks_claimed", "Tasks the server handed this worker", registry=registry
        )
        registry.register(self)

    def bind(
        self,
        *,
        slots_total: Callable[[], int],
        slots_busy: Callable[[], int],
        report_lag: Callable[[], float],
        reports_sent: Callable[[], int],
        child_restarts: Callable[[], int],
    ) -> None:
        """Read the worker's state from these (called from the scrape's thread)."""
        self._slots_total = slots_total
        self._slots_busy = slots_busy
        self._report_lag = report_lag
        self._reports_sent = reports_sent
        self._child_restarts = child_restarts

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve the metrics over HTTP on `host`:`port` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)

    # -- calls --------------------------------------------------------------------------
    async def observe(self, call: str, wait: float, running: Awaitable[T]) -> T:
        """Await one call to the server, recording how it ended."""
        with self._lock:
            self._next_call += 1
            key = self._next_call
            self._pending[key] = time.monotonic() + wait + REQUEST_TIMEOUT + ATTEMPT_SLACK
        try:
            result = await running
        except OprunError as exc:
            failed = isinstance(exc, ServerError | Unavailable) and not isinstance(exc, Throttled)
            self._ended(call, "failed" if failed else "refused", reached=not failed)
            raise
        except Exception:
            self._ended(call, "failed", reached=False)
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
        self._ended(call, "ok", reached=True)
        return result

    def _ended(self, call: str, outcome: str, *, reached: bool) -> None:
        self.calls.labels(call, outcome).inc()
        with self._lock:
            self._failed = not reached
            if reached:
                self._last_success = time.monotonic()

    def reachable(self) -> bool:
        """Whether the server answered the last call and no call is stuck retrying."""
        now = time.monotonic()
        with self._lock:
            stuck = any(deadline < now for deadline in self._pending.values())
            return self._last_success is not None and not self._failed and not stuck

    # -- the collector ------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        """Nothing: the names are fixed (registering reads no state)."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The gauges, read now."""
        yield _gauge("oprun_worker_slots", "Tasks this worker runs at once", self._slots_total())
        yield _gauge("oprun_worker_slots_busy", "Slots running a task now", self._slots_busy())
        yield _gauge(
            "oprun_worker_report_lag_seconds",
            "How long the oldest report the server has not answered yet has waited (0: none)",
            self._report_lag(),
        )
        yield _counter(
            "oprun_worker_reports_sent",
            "Reports (of tasks and sessions) the server answered",
            self._reports_sent(),
        )
        yield _counter(
            "oprun_worker_child_restarts",
            "Python child processes started to replace one that died or could not be reused",
            self._child_restarts(),
        )
        yield _gauge(
            "oprun_worker_server_reachable",
            "1 when the server answered the last call and none is stuck retrying, else 0",
            1 if self.reachable() else 0,
        )
        with self._lock:
            last = self._last_success
        age = GaugeMetricFamily(
            "oprun_worker_server_last_success_age_seconds",
            "Seconds since the server last answered a call (absent before the first answer)",
        )
        if last is not None:
            age.add_metric([], max(0.0, time.monotonic() - last))
        yield age


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class ObservedClient(WorkerClient):
    """A `WorkerClient` whose calls are recorded in `metrics`."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        *,
        metrics: WorkerMetrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """A client of `url` (see `WorkerClient`) that records its calls in `metrics`."""
        super().__init__(url, token, transport=transport)
        self.metrics = metrics

    async def register(self, registration: WorkerRegistration) -> Worker:
        """POST /v1/workers, observed."""
        return await self.metrics.observe("register", 0.0, super().register(registration))

    async def claim(self, worker_id: str, request: ClaimRequest) -> ClaimResponse:
        """POST /v1/workers/{id}:claim, observed and counted."""
        response = await self.metrics.observe(
            "claim", request.wait, super().claim(worker_id, request)
        )
        self.metrics.claims.inc()
        self.metrics.tasks_claimed.inc(len(response.assignments))
        return response

    async def heartbeat(
        self, worker_id: str, beat: Heartbeat, wait: float, *, retry: bool = True
    ) -> HeartbeatResponse:
        """POST /v1/workers/{id}:heartbeat, observed."""
        return await self.metrics.observe(
            "heartbeat", wait, super().heartbeat(worker_id, beat, wait, retry=retry)
        )

    async def report(self, worker_id: str, body: str) -> ReportBatchResponse:
        """POST /v1/workers/{id}:report, observed."""
        return await self.metrics.observe("report", 0.0, super().report(worker_id, body))
