"""What a failed wait tells of the processes' logs: the last lines of each that matter."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path


def log_lines(path: Path) -> list[str]:
    """The lines of the log at `path` (bytes no codec reads kept as replacements)."""
    return path.read_text(errors="replace").splitlines()


def tails(paths: Iterable[Path], keep: Callable[[str], bool], count: int, what: str) -> str:
    """For each log, a heading naming it and `what`, then its last `count` kept lines."""
    return "\n".join(
        f"--- {path.name}, {what}:\n"
        + "\n".join([line for line in log_lines(path) if keep(line)][-count:])
        for path in paths
    )
