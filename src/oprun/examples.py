"""Example actions, served by the worker of `oprun up` and used in the README's tour.

oprun invoke sleep --param seconds=5 --wait
"""

from __future__ import annotations

import time
from typing import Any

from oprun.app import App
from oprun.context import Context

app = App("examples")


@app.action(name="sleep")
def sleep(ctx: Context, seconds: float = 2.0, steps: int = 10) -> dict[str, Any]:
    """Sleep for `seconds` in `steps` steps, reporting progress; stops early when canceled."""
    steps = max(1, steps)
    ctx.step("PROCESSING")
    done = 0
    for done in range(1, steps + 1):
        if ctx.cancelled:
            ctx.log(f"canceled after {done - 1} of {steps} steps")
            break
        time.sleep(seconds / steps)
        ctx.progress(100.0 * done / steps, f"step {done}/{steps}")
        ctx.log(f"step {done}/{steps} done")
    return {"slept": seconds * done / steps, "steps": done}


@app.action(name="echo")
def echo(ctx: Context, value: Any = None) -> Any:
    """Return `value` unchanged."""
    return value


@app.action(name="fail", max_attempts=1)
def fail(ctx: Context, message: str = "boom") -> None:
    """Raise `ValueError(message)`: shows what a failed operation looks like."""
    raise ValueError(message)


@app.action(name="noop")
def noop(ctx: Context) -> None:
    """Do nothing: measures the platform's own overhead."""
