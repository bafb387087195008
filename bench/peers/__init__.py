"""The peers `bench.compare` runs oprun against: one script per job queue.

Each ``bench_<peer>.py`` runs in the peers' own venv (made by `bench.compare` from
``requirements.txt``; these never import oprun, and oprun never imports them) and
drives its peer with the workload of `bench.throughput`: no-op jobs, 2 worker
processes, loopback. It prints one JSON line:

- ``enqueue_per_s``: N enqueues one at a time, no workers running;
- ``enqueue_bulk_per_s``: N through the peer's bulk API, where it has one
  (procrastinate's ``batch_defer_async``, RQ's ``enqueue_many``);
- ``drain_per_s``: workers running and warm, from the first enqueue of N until the
  peer's own status or result mechanism says all N are done;
- ``rtt_p50_ms`` / ``rtt_p99_ms``: enqueue one job and wait for its result through
  the peer's wait API, R times in a row.

Redis on 127.0.0.1:6379 (``PEERS_REDIS``) and PostgreSQL on 127.0.0.1:5432
(``PEERS_PG``, a database ``bench`` procrastinate's script makes) must be running.
``PEERS_LOG_DIR`` holds the workers' logs.
"""
