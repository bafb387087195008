"""The worker agent: claims work from the server over HTTP and runs it in child processes."""

from oprun.worker.agent import WorkerAgent, run_worker

__all__ = ["WorkerAgent", "run_worker"]
