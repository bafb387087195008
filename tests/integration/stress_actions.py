"""Actions the stress proofs (test_stress.py) run on real workers.

`gate` holds its slot until a file appears, so a test decides when each attempt may
finish, and leaves a marker file per attempt started and per attempt finished: the
markers count how often the work ran and ran to its end, whatever the server says.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from oprun import App

app = App("stress")


@app.action(name="gate", max_attempts=10)
def gate(
    ctx: Any, marker_dir: str, gate: str, grandchild: bool = False, limit: float = 120.0
) -> dict[str, Any]:
    """Wait until the file `gate` exists, then return; markers record the attempt.

    `start-<task>-<session action>` holds the pids of this attempt (and of its
    grandchild, a `sleep` in the same process group, when `grandchild`);
    `done-<task>-<session action>` is written once the attempt has finished.
    """
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{ctx.task_id}-{ctx.session_action_id}"
    pids = {"pid": os.getpid(), "ppid": os.getppid(), "attempt": ctx.attempt}
    sleeper = subprocess.Popen(["sleep", "600"]) if grandchild else None
    if sleeper is not None:
        pids["grandchild"] = sleeper.pid
    _write_marker(folder, f"start-{name}", pids)
    try:
        deadline = time.monotonic() + limit
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {gate} still closed after {limit:g} s")
            time.sleep(0.05)
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
    _write_marker(folder, f"done-{name}", pids)
    return {"session_action_id": ctx.session_action_id, "attempt": ctx.attempt}


def _write_marker(folder: Path, name: str, pids: dict[str, int]) -> None:
    """Write a marker atomically: a reader never sees it half-written."""
    (folder / f".{name}").write_text(json.dumps(pids))
    (folder / f".{name}").rename(folder / name)


@app.action(name="quick", max_attempts=1)
def quick(ctx: Any, seconds: float = 0.0) -> str:
    """Sleep a moment (or not at all) and return the session action that ran it."""
    if seconds > 0:
        time.sleep(seconds)
    return ctx.session_action_id
