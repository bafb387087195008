"""Actions the outage proofs (test_outage_recovery.py) run on real workers.

`work` takes a while and leaves a marker file per attempt started and per attempt
finished, so a test counts how often each task ran, whatever the server says.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from oprun import App

app = App("outages")


@app.action(name="work", max_attempts=10)
def work(ctx: Any, marker_dir: str, seconds: float = 1.0) -> str:
    """Work for `seconds`; `start-<task>-<attempt>` and `done-<task>-<attempt>` record it."""
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{ctx.task_id}-{ctx.session_action_id}"
    _write_marker(folder, f"start-{name}", {"pid": os.getpid(), "at": time.time()})
    time.sleep(seconds)
    _write_marker(folder, f"done-{name}", {"pid": os.getpid(), "at": time.time()})
    return str(ctx.session_action_id)


def _write_marker(folder: Path, name: str, data: dict[str, Any]) -> None:
    """Write a marker atomically: a reader never sees it half-written."""
    (folder / f".{name}").write_text(json.dumps(data))
    (folder / f".{name}").rename(folder / name)
