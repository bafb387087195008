"""`bench.memory` prints each block's server RSS and the last block's ratio to the first."""

from __future__ import annotations

import os

from bench.memory import format_table, rss_mib


def test_the_table_has_a_row_per_block_and_the_ratio_of_the_last_to_the_first():
    table = format_table({"postgres": [(10_000, 100.0), (20_000, 104.0), (30_000, 112.0)]})
    lines = table.splitlines()
    assert lines[0].split() == ["drained", "postgres", "RSS", "MiB"]
    assert [line.split()[0] for line in lines[1:4]] == ["10,000", "20,000", "30,000"]
    assert lines[-1].endswith("1.120")


def test_rss_is_read_from_proc():
    assert 1 < rss_mib(os.getpid()) < 100_000
