"""Issue 10's multi-host rehearsal: oprun on seven hosts, drained, then faulted under load.

A database host (a private PostgreSQL), two API hosts and four worker hosts, each a
network namespace on one bridge (`tests.integration._rehearsal`), lease 2 s and the
reaper every 0.25 s. The work (`outage_actions.work`) sleeps and leaves a marker
file per attempt started and finished, so the test counts what ran whatever the
server says.

1. Drain: a batch of sleeping operations with 1, 2 and 4 worker hosts (4 slots each).
2. Faults under load, while SDK callers on another host submit with both API URLs and
   idempotency keys: one API host gets SIGKILL (and is started again), one worker host
   is cut off from the network for two leases and plugged back in, and the database
   host is restarted (``pg_ctl stop -m fast``, then start). No submit fails, every
   operation ends SUCCEEDED exactly once, nothing is left running, and every process
   but the one killed keeps running.

Figures (drain per host count, time to recover from each fault) are printed at the end
of the run. Drain is measured, not asserted: the goal of x3.5 from 1 to 4 worker hosts
is out of reach on a shared two-core machine, where the hosts' 20 processes compete for
the CPU with the API and the database, and while a claim that finds every waiting task
locked by another worker's claim sleeps until new work is invoked (see the issue note). Needs root, ``ip netns`` and PostgreSQL 15's binaries: skipped with the
reason without them, mandatory when ``OPRUN_REQUIRE_NETNS=1`` (CI).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oprun import Client
from tests.integration._netns import Host, require_netns
from tests.integration._rehearsal import LEASE, SLOTS, WORKER_HOSTS, Cluster

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

NAP = 0.5
"""Seconds each drained operation sleeps."""
WAVES = 10
"""Drained operations per slot: enough that the first and last waves weigh little."""
CALLERS = 3
PAUSE = 0.1
"""Seconds each caller rests between two submits."""
LOAD = 2.0
"""Seconds of load before each fault."""
DOWN = 3.0
"""Seconds the killed API host stays down before it is started again."""
DRAIN_TIMEOUT = 90.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")
TOKEN = f"oprun_test_{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """The hosts, the database and both API hosts; worker hosts start as tests need them."""
    require_netns()
    built = Cluster(tmp_path_factory.mktemp("rehearsal"), TOKEN)
    try:
        built.start()
        yield built
    finally:
        built.close()


def _invoke(cluster: Cluster, label: str, count: int, seconds: float) -> None:
    invocations = [
        {
            "action": "work",
            "parameters": {"marker_dir": str(cluster.markers), "seconds": seconds},
            "idempotency_key": f"{label}-{i}",
        }
        for i in range(count)
    ]
    cluster.client_call(lambda client: client.operations.invoke_many(invocations))


def _until_done(cluster: Cluster, label: str, count: int) -> tuple[float, float]:
    """Wait until the `count` operations keyed `label-*` ended; their first creation and last end."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        done, statuses, first, last = cluster.sql(
            "SELECT count(*) FILTER (WHERE status = ANY(%s)), array_agg(DISTINCT status),"
            " min(created_at), max(ended_at) FROM operations WHERE idempotency_key LIKE %s",
            list(TERMINAL),
            f"{label}-%",
        )[0]
        if done == count:
            assert statuses == ["SUCCEEDED"], f"{label}: {statuses}"
            return first, last
        assert time.monotonic() < deadline, f"{label}: {done} of {count} done in {DRAIN_TIMEOUT} s"
        time.sleep(0.1)


def test_drain_grows_with_worker_hosts(cluster: Cluster, figure) -> None:
    rates: dict[int, float] = {}
    for hosts in (1, 2, 4):
        cluster.workers_up(hosts)
        # Every slot starts its child process before the clock runs.
        warm = 2 * SLOTS * hosts
        _invoke(cluster, f"warm{hosts}", warm, 0.2)
        _until_done(cluster, f"warm{hosts}", warm)
        count = WAVES * SLOTS * hosts
        _invoke(cluster, f"drain{hosts}", count, NAP)
        first, last = _until_done(cluster, f"drain{hosts}", count)
        rates[hosts] = count / (last - first)
        ideal = SLOTS * hosts / NAP
        held = cluster.sql(  # slot-seconds from claim to end
            "SELECT sum(sa.ended_at - sa.created_at) FROM session_actions sa"
            " JOIN operations o ON o.id = sa.operation_id WHERE o.idempotency_key LIKE %s",
            f"drain{hosts}-%",
        )[0][0]
        figure(
            f"drain, {hosts} worker host(s) x {SLOTS} slots, work sleeping {NAP:g} s: "
            f"{rates[hosts]:.1f} ops/s ({count} operations in {last - first:.2f} s, "
            f"{rates[hosts] / ideal:.0%} of the {ideal:g} ops/s the sleep allows; "
            f"slots held {held / (SLOTS * hosts * (last - first)):.0%} of the time)"
        )
    figure(
        f"drain from 1 to 2 worker hosts x{rates[2] / rates[1]:.2f}, "
        f"from 1 to 4 x{rates[4] / rates[1]:.2f} (goal x3.5)"
    )


class Caller(threading.Thread):
    """Invokes `work` with a fresh idempotency key, again and again, from the ops host."""

    def __init__(self, index: int, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.ops: Host = cluster.host("ops")
        self.urls = cluster.urls
        self.parameters = {"marker_dir": str(cluster.markers), "seconds": 0.25}
        self.stop = threading.Event()
        self.submitted: dict[str, str] = {}
        """Operation id by idempotency key."""
        self.failures: list[str] = []
        self.calls: list[tuple[float, float]] = []
        """When each submit began (time.time()) and how long it took."""

    def run(self) -> None:
        self.ops.enter()
        with Client(self.urls, TOKEN) as client:
            count = 0
            while not self.stop.is_set():
                key = f"load-{self.index}-{count}"
                began, clock = time.time(), time.monotonic()
                try:
                    op = client.operations.invoke("work", self.parameters, idempotency_key=key)
                    self.submitted[key] = op.id
                except Exception as exc:  # every failure is what the test counts
                    self.failures.append(f"{key}: {exc!r}")
                self.calls.append((began, time.monotonic() - clock))
                count += 1
                time.sleep(PAUSE)


def _finished_since(cluster: Cluster, since: float) -> dict[str, float]:
    """When each worker host first finished an attempt after `since` (time.time())."""
    rows = cluster.sql(
        "SELECT w.name, min(sa.ended_at) FROM session_actions sa"
        " JOIN workers w ON w.id = sa.worker_id"
        " WHERE sa.status = 'SUCCEEDED' AND sa.ended_at > %s GROUP BY w.name",
        since,
    )
    return {name: at for name, at in rows}


def _until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)
    return found


def _every_host_worked_since(cluster: Cluster, since: float, what: str) -> float:
    """Seconds from `since` until every worker host had finished an attempt."""
    try:
        done = _until(
            lambda: (f := _finished_since(cluster, since)).keys() >= set(WORKER_HOSTS) and f,
            f"every worker host finished work after {what}",
        )
    except AssertionError as failed:
        idle = set(WORKER_HOSTS) - _finished_since(cluster, since).keys()
        raise AssertionError(f"{failed}; idle: {sorted(idle)}\n{cluster.story(idle)}") from None
    return max(done.values()) - since


def _slowest(callers: list[Caller], start: float, end: float) -> float:
    return max((d for c in callers for b, d in c.calls if start <= b <= end), default=0.0)


def test_faults_under_load_lose_nothing(cluster: Cluster, figure) -> None:
    cluster.workers_up(len(WORKER_HOSTS))
    cut_host = cluster.host("w4")
    callers = [Caller(i, cluster) for i in range(CALLERS)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(LOAD)

        # 1. An API host dies (SIGKILL), and is started again after DOWN seconds.
        killed = time.time()
        cluster.servers["api1"].kill()
        cluster.servers["api1"].wait()
        time.sleep(DOWN)
        restarted = time.time()
        cluster.start_api("api1")
        api_back = time.time()
        failover = _every_host_worked_since(cluster, killed, "the API host was killed")
        time.sleep(LOAD)

        # 2. A worker host is cut off for two leases, while it holds work.
        held_sql = (
            "SELECT count(*) FROM session_actions sa JOIN workers w ON w.id = sa.worker_id"
            " WHERE w.name = %s AND sa.status = 'RUNNING'"
        )
        _until(lambda: cluster.sql(held_sql, cut_host.name)[0][0], f"{cut_host.name} holds work")
        heard_sql = "SELECT max(last_heartbeat_at) FROM workers WHERE name = %s"
        heard_before = cluster.sql(heard_sql, cut_host.name)[0][0]
        cut = time.time()
        cluster.net.cut(cut_host)
        time.sleep(2 * LEASE)
        cluster.net.heal(cut_host)
        healed = time.time()
        back_sql = (
            "SELECT min(sa.ended_at) FROM session_actions sa JOIN workers w ON w.id = sa.worker_id"
            " WHERE w.name = %s AND sa.status = 'SUCCEEDED' AND sa.created_at > %s"
        )

        heard: list[float] = []  # the first heartbeat the server stored after the heal

        def rejoined() -> float | None:
            process = cluster.workers[cut_host.name]
            assert process.poll() is None, (
                f"{cut_host.name}'s worker exited ({process.returncode}) after the cut:\n"
                + cluster.worker_log(cut_host.name)[-3000:]
            )
            if not heard and (at := cluster.sql(heard_sql, cut_host.name)[0][0]) > healed:
                heard.append(at)
            return cluster.sql(back_sql, cut_host.name, healed)[0][0]

        rejoin = _until(rejoined, f"{cut_host.name} works again after the cut") - healed
        assert heard, f"{cut_host.name} worked again unheard"

        # 3. The database host restarts.
        time.sleep(LOAD)
        db_stop = time.time()
        assert cluster.db is not None
        cluster.db.stop("fast")
        cluster.db.start()
        db_back = time.time()
        recovered = _every_host_worked_since(cluster, db_back, "the database restarted")
        time.sleep(LOAD)
    finally:
        for caller in callers:
            caller.stop.set()
        for caller in callers:
            caller.join(60)
    load_ended = time.time()
    assert not any(c.is_alive() for c in callers), "a caller is still submitting"

    # No submit failed, each submitted once; every operation ended SUCCEEDED.
    failures = [f for caller in callers for f in caller.failures]
    submitted = {k: v for caller in callers for k, v in caller.submitted.items()}
    assert failures == [], f"{len(failures)} submits failed: {failures[:5]}"
    assert len(set(submitted.values())) == len(submitted), "two keys, one operation"
    count = len(submitted)
    _, last = _until_done(cluster, "load", count)
    rows = cluster.sql(
        "SELECT idempotency_key, id FROM operations WHERE idempotency_key LIKE 'load-%'"
    )
    assert dict(rows) == submitted, "operations lost, unknown or made twice"
    stuck = cluster.sql(
        "SELECT status, count(*) FROM session_actions WHERE status <> ALL(%s) GROUP BY status",
        [*TERMINAL, "INTERRUPTED"],
    )
    assert stuck == [], f"attempts left unfinished: {stuck}"
    # Every task ran to its end at least once, by the markers its attempts left.
    tasks = {
        row[0]
        for row in cluster.sql(
            "SELECT t.id FROM tasks t JOIN operations o ON o.id = t.operation_id"
            " WHERE o.idempotency_key LIKE 'load-%'"
        )
    }
    done = {p.name.split("-")[1] for p in Path(cluster.markers).glob("done-*")}
    assert tasks <= done, f"{len(tasks - done)} tasks never ran to their end"

    # The cut-off host's attempts were requeued and ran elsewhere; it never exited.
    interrupted = cluster.sql(
        "SELECT sa.task_id, sa.ended_at FROM session_actions sa JOIN workers w"
        " ON w.id = sa.worker_id WHERE w.name = %s AND sa.status = 'INTERRUPTED'"
        " AND sa.ended_at > %s",
        cut_host.name,
        cut,
    )
    assert interrupted, f"nothing of {cut_host.name}'s was requeued"
    elsewhere = cluster.sql(
        "SELECT count(DISTINCT sa.task_id) FROM session_actions sa JOIN workers w"
        " ON w.id = sa.worker_id WHERE sa.task_id = ANY(%s) AND sa.status = 'SUCCEEDED'"
        " AND w.name <> %s",
        [task for task, _ in interrupted],
        cut_host.name,
    )[0][0]
    for name, process in [*cluster.workers.items(), *cluster.servers.items()]:
        assert process.poll() is None, f"{name} exited with {process.returncode}"
    registrations = dict(cluster.sql("SELECT name, count(*) FROM workers GROUP BY name"))

    attempts = cluster.sql(
        "SELECT count(*) FROM session_actions sa JOIN operations o ON o.id = sa.operation_id"
        " WHERE o.idempotency_key LIKE 'load-%'"
    )[0][0]
    retried = sum(
        log.count("server_failover") + log.count("server_call_retry")
        for log in map(cluster.worker_log, WORKER_HOSTS)
    )
    figure(
        f"{count} submits by {CALLERS} SDK callers given both API hosts, through 3 faults: "
        f"0 failed, 0 lost, 0 twice; all SUCCEEDED in {attempts} attempts "
        f"({attempts - count} extra), drained {last - load_ended:.1f} s after the load stopped"
    )
    figure(
        f"API host killed (SIGKILL): every worker host finished work through the other "
        f"within {failover:.1f} s; started again {restarted - killed:.1f} s later, ready after "
        f"{api_back - restarted:.1f} s more; slowest submit meanwhile "
        f"{_slowest(callers, killed, api_back):.2f} s; "
        f"{retried} worker calls failed over or retried in all the faults"
    )
    figure(
        f"worker host cut off for {healed - cut:.1f} s ({2 * LEASE:g} s = 2 leases): its "
        f"{len(interrupted)} attempt(s) requeued within "
        f"{max(at for _, at in interrupted) - cut:.1f} s of the cut ({elsewhere} finished on "
        f"other hosts); the server heard it again {heard[0] - healed:.1f} s after it was "
        f"plugged back in (silent {heard[0] - heard_before:.1f} s; given up after "
        f"{3 * LEASE:g} s) and it finished work again after {rejoin:.1f} s, the same worker "
        f"process, registered {registrations[cut_host.name]} time(s)"
    )
    figure(
        f"database host restarted (stop -m fast, start): down {db_back - db_stop:.1f} s; every "
        f"worker host finished work again within {recovered:.1f} s; slowest submit meanwhile "
        f"{_slowest(callers, db_stop, db_back + recovered):.2f} s"
    )
