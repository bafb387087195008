"""Actions the integration tests run on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from oprun import App

app = App("tests")


@app.action(name="echo")
def echo(ctx: Any, value: Any = None) -> Any:
    """Return its input."""
    return value


@app.action(name="progress")
def progress(ctx: Any, steps: int = 5, delay: float = 0.05) -> dict[str, int]:
    """Report progress and log lines, step by step."""
    ctx.step("PROCESSING")
    for i in range(steps):
        ctx.progress(100 * (i + 1) / steps, f"step {i + 1}/{steps}")
        ctx.log(f"did step {i + 1}")
        time.sleep(delay)
    print("printed to stdout")
    return {"steps": steps}


@app.action(name="stubborn", max_attempts=1)
def stubborn(ctx: Any, pid_dir: str, seconds: float = 60.0) -> None:
    """Start a grandchild that ignores SIGTERM, record both pids, then sleep."""
    folder = Path(pid_dir)
    folder.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 600"])
    (folder / "pids").write_text(f"{os.getpid()} {child.pid}\n")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@app.action(name="once", max_attempts=3)
def once(ctx: Any, marker_dir: str, seconds: float = 0.0) -> int:
    """Leave one marker file per run, then sleep: counts how often the work ran."""
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"run-{uuid.uuid4().hex}").write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.05)
    return len(list(folder.iterdir()))


@app.action(name="fail", max_attempts=1)
def fail(ctx: Any, message: str = "boom") -> None:
    """Raise."""
    raise ValueError(message)


@app.action(name="garbage")
def garbage(ctx: Any) -> dict[str, str]:
    """Print what no database stores as text: NUL, a lone surrogate, bytes that are not UTF-8."""
    ctx.log("log nul \x00 here")
    ctx.log("log lone \ud800 surrogate")
    ctx.progress(50, "half\x00way \ud800")
    sys.stdout.buffer.write(b"raw \xff\xfe bytes and a nul \x00\n")
    sys.stdout.flush()
    print("print lone \udcff surrogate", flush=True)
    # A euro sign (e2 82 ac) split across two writes the worker reads apart.
    sys.stdout.buffer.write(b"raw \x80 and \xff, split \xe2\x82")
    sys.stdout.flush()
    time.sleep(0.2)
    sys.stdout.buffer.write(b"\xac here\n")
    # Output that escaping makes longer than its limit: cut once escaped.
    sys.stdout.buffer.write(b"\x80" * 20_000 + b"\n")
    sys.stdout.flush()
    ctx.log("\x00" * 16_384)
    ctx.progress(60, "\x00" * 4096)
    return {"nul": "a\x00b", "lone": "\ud800"}
