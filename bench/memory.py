"""Server memory while operations drain: resident set size after every block of them.

    python -m bench.memory [--ops 100000] [--every 10000] [--backends postgres,sqlite]

For each backend, a fresh database, one real `oprun server` and two real `oprun worker`
processes (8 slots each) on loopback, as `bench.throughput` starts them. The operations
are submitted and drained in blocks of `--every` (bulk submits of 1,000, then a wait for
the block's last one); after each block the server's RSS (`/proc/<pid>/status`) is
read. Printed: RSS after each block, and the last block's RSS as a ratio of the first
(the target: within 10 %, so that a server's memory does not grow with the operations it
has served).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

from bench.throughput import (
    BACKENDS,
    Config,
    _client,
    _register_noop,
    _servers,
    _start_fleet,
    _submit_bulk,
    _wait_all,
    database,
)

TARGET = 1.10


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def drain_blocks(backend: str, ops: int, every: int) -> list[tuple[int, float]]:
    """(operations drained so far, server RSS MiB) after each block of `every`."""
    samples: list[tuple[int, float]] = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(database(backend, folder))
        (server,) = _servers(stack, url, 1, folder / "logs")
        pid = cast(Any, server.process).pid
        with _client(server) as client:
            _register_noop(client)
            _start_fleet(stack, [server], Config(), folder / "logs")
            done = 0
            while done < ops:
                block = min(every, ops - done)
                ids = _submit_bulk(client, block)
                _wait_all(client, ids[-1])
                done += block
                samples.append((done, rss_mib(pid)))
                print(
                    f"{backend}: {done:>9,} drained, server RSS {samples[-1][1]:.1f} MiB",
                    flush=True,
                )
    return samples


def format_table(results: dict[str, list[tuple[int, float]]]) -> str:
    """One row per block, one column per backend, then the last/first ratio."""
    backends = list(results)
    rows = [["drained", *(f"{b} RSS MiB" for b in backends)]]
    for i, (done, _) in enumerate(results[backends[0]]):
        rows.append([f"{done:,}", *(f"{results[b][i][1]:.1f}" for b in backends)])
    ratios = [results[b][-1][1] / results[b][0][1] for b in backends]
    rows.append([f"last / first (target <= {TARGET:.2f})", *(f"{r:.3f}" for r in ratios)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    results = {b: drain_blocks(b, args.ops, args.every) for b in args.backends.split(",")}
    print()
    print(format_table(results))


if __name__ == "__main__":
    main()
