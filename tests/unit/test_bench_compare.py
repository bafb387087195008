"""bench.compare's arguments and table (the benchmark itself runs by hand, never here)."""

from __future__ import annotations

import pytest
from bench.compare import format_ratios, format_table, parse_args, peer_row

ROWS = {
    "oprun-postgres": {
        "drain": 2000.0,
        "bulk submit": 30000.0,
        "single submit": 900.0,
        "p50": 2.0,
        "p99": 8.0,
    },
    "celery": peer_row(
        {"drain_per_s": 1000.0, "enqueue_per_s": 3000.0, "rtt_p50_ms": 4.0, "rtt_p99_ms": 8.0}
    ),
}


def test_the_table_has_a_row_per_system_and_n_a_where_there_is_no_bulk_api():
    lines = format_table(ROWS).splitlines()
    assert lines[0].split()[0] == "system" and "drain" in lines[0] and "p99" in lines[0]
    assert lines[1].split()[:2] == ["oprun-postgres", "2,000"]
    assert lines[2].split() == ["celery", "1,000", "n/a", "3,000", "4.00", "8.00"]


def test_ratios_divide_oprun_postgres_by_each_peer():
    line = format_ratios(ROWS).splitlines()[-1].split()
    assert line == ["celery", "2.00x", "n/a", "0.30x", "0.50x", "1.00x"]


def test_arguments():
    args = parse_args(["--ops", "500", "--peers", "huey,rq", "--backends", "postgres"])
    assert (args.ops, args.rtt, args.peers, args.backends) == (
        500,
        200,
        ["huey", "rq"],
        ["postgres"],
    )
    assert parse_args([]).peers == ["procrastinate", "celery", "dramatiq", "huey", "rq"]
    with pytest.raises(SystemExit):
        parse_args(["--peers", "sidekiq"])
