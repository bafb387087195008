"""The worker agent: claims work from the server over HTTP and runs it in child processes.

The names below load on first use: the child and OpenJD host processes import
modules of this package and must not pay for the agent's HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oprun.worker.agent import WorkerAgent, WorkerGivenUp, run_worker

__all__ = ["WorkerAgent", "WorkerGivenUp", "run_worker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from oprun.worker import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'oprun.worker' has no attribute {name!r}")
