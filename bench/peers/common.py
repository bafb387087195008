"""Shared helpers for the peer benchmarks: worker process control, timing, reporting.

Every peer script does the same three measurements:
  (a) enqueue throughput: N no-op jobs from one client, no workers running
  (b) drain throughput: workers already running; time from first enqueue
      until the peer's own status/result mechanism says all N are done
  (c) round trip: enqueue 1 job, wait for it via the peer's wait/result API, x R
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)  # this script runs in the peers' venv (bench.compare)
LOG_DIR = os.environ.get("PEERS_LOG_DIR", os.path.join(tempfile.gettempdir(), "peers-logs"))
REDIS_URL = os.environ.get("PEERS_REDIS", "redis://127.0.0.1:6379")
PG_DSN = os.environ.get("PEERS_PG", "postgresql://postgres@127.0.0.1:5432/bench")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000, help="jobs for (a) and (b)")
    p.add_argument("--rtt", type=int, default=200, help="sequential round trips for (c)")
    p.add_argument("--run", default="1", help="label of this run")
    p.add_argument("--variant", default="", help="peer-specific variant")
    return p.parse_args()


def start_workers(argvs, name):
    """Start each argv in its own session; we later signal that group by the PID we got."""
    os.makedirs(LOG_DIR, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=HERE, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    procs = []
    for i, argv in enumerate(argvs):
        log = open(os.path.join(LOG_DIR, f"{name}-{i}.log"), "w")  # noqa: SIM115 (the child holds it)
        procs.append(
            subprocess.Popen(
                argv,
                cwd=HERE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_workers(procs, grace=15):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.time()))
    for p in procs:  # anything left in the group (children included) gets SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def wait_until(pred, timeout, interval=0.01, what="condition"):
    end = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def rtt_stats(lat_s):
    ms = [x * 1000 for x in lat_s]
    return {
        "rtt_n": len(ms),
        "rtt_p50_ms": round(percentile(ms, 50), 2),
        "rtt_p99_ms": round(percentile(ms, 99), 2),
        "rtt_max_ms": round(max(ms), 2),
        "rtt_mean_ms": round(sum(ms) / len(ms), 2),
    }


def report(rec):
    rec = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()}
    line = json.dumps(rec)
    print(line, flush=True)
    out = os.environ.get("PEERS_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")
