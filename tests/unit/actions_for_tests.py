"""Actions that the child-process tests run in a real child (imported there by entrypoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from oprun.app import App
from oprun.context import Context

app = App("unit-tests")


@app.action()
def chatty(ctx: Context, steps: int = 3) -> int:
    """Step, progress and log lines, then print (with and without a final newline)."""
    ctx.step("PROCESSING")
    for i in range(steps):
        ctx.progress(100 * (i + 1) / steps, f"{i + 1}/{steps}")
        ctx.log("step", i + 1)
    print("printed by print()")
    sys.stderr.write("written to stderr\n")
    subprocess.run(["sh", "-c", "echo from a grandchild"], check=True)
    print("no newline at the end", end="")
    return steps


@app.action()
def whoami(ctx: Context) -> dict[str, Any]:
    """What the child process looks like from inside."""
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "token": os.environ.get("OPRUN_TOKEN"),
        "attempt": ctx.attempt,
        "operation_id": ctx.operation_id,
        "input_dir": str(ctx.input_dir),
        "output_dir_exists": ctx.output_dir.is_dir(),
    }


@app.action()
def stubborn(ctx: Context) -> None:
    """Start a grandchild that ignores SIGTERM, log its pid, then ignore cancels forever."""
    child = subprocess.Popen(
        ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60'], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.readline()  # its trap is set
    ctx.log(f"grandchild {child.pid}")
    while True:
        try:
            time.sleep(0.05)
        except BaseException:  # the point: it refuses to stop
            continue


@app.action()
def patient(ctx: Context, seconds: float = 30.0) -> str:
    """Sleep until canceled, checking ctx.cancelled (SIGTERM interrupts it anyway)."""
    ctx.log(f"waiting {os.getpid()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.02)
    return "done"


@app.action()
def wraps_the_cancel(ctx: Context) -> None:
    """Turn the SIGTERM of a cancel into another error, as libraries sometimes do."""
    ctx.log("waiting")
    try:
        time.sleep(30)
    except BaseException as exc:
        raise RuntimeError("the library wrapped what interrupted it") from exc


@app.action()
def returns_when_canceled(ctx: Context) -> str:
    """Ignore SIGTERM and end normally once ctx.cancelled says so."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.log("waiting")
    while not ctx.cancelled:
        time.sleep(0.01)
    return "partial"


@app.action()
def crash(ctx: Context, code: int = 3) -> None:
    """Leave the process at once, as a segfault or os._exit would."""
    print("about to crash", flush=True)
    os._exit(code)


@app.action()
def unserialisable(ctx: Context) -> object:
    """Return something JSON cannot encode."""
    return {1, 2, 3}


@app.action()
async def asynchronous(ctx: Context, value: int = 1) -> int:
    """An async action: the child runs it in an event loop of its own."""
    return value * 2


@app.action()
def with_path(ctx: Context, where: Path = Path(".")) -> str:
    """Receives a path parameter as a `Path`."""
    return type(where).__name__
