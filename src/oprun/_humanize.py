"""Ages and durations as people read them, one implementation for the CLI and the web UI.

It imports nothing of oprun, so the CLI (over the SDK) and the web UI (over the
services) may both use it. Each amount has two spellings: the pages' (`4 min`,
`1 h 2 min`) and the compact one of the CLI's table columns (`4m`, `4.2s`). The
pages' scripts keep a JavaScript copy of the pages' spelling (`web/static/app.js`),
held to this one by a browser test.
"""

from __future__ import annotations

_UNITS = ((86400, "d", "d"), (3600, "h", "h"), (60, "min", "m"), (1, "s", "s"))
"""Size in seconds, the pages' name and the compact name of each unit, largest first."""


def age(seconds: float, *, compact: bool = False) -> str:
    """`seconds` in whole units of the largest unit it holds.

    `0 s`, `12 s`, `4 min`, `3 h`, `2 d`; with `compact`, `12s`, `4m`, `3h`, `2d`.
    A negative age (clocks apart) reads as 0.
    """
    whole = max(0, int(seconds))
    size, name, short = next((unit for unit in _UNITS if whole >= unit[0]), _UNITS[-1])
    count = whole // size
    return f"{count}{short}" if compact else f"{count} {name}"


def duration(seconds: float, *, compact: bool = False) -> str:
    """How long something took.

    `35 ms`, `4.2 s`, `12 s`, `4 min 10 s`, `1 h 2 min`, `3 d 4 h` (a negative
    duration reads as 0); with `compact`, seconds to one decimal as given: `4.2s`,
    `3720.0s`.
    """
    if compact:
        return f"{seconds:.1f}s"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
