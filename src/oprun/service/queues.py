"""Use cases on queues: how much work waits, runs and ends in each."""

from __future__ import annotations

from oprun.domain.models import QueueStats
from oprun.domain.roles import Permission
from oprun.service.auth import Principal
from oprun.store import Store


class QueueService:
    """Reading the queues of the caller's project."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def stats(self, principal: Principal) -> list[QueueStats]:
        """Every queue of the project, highest priority first, then by name.

        Each with its depth, running work and the last hour's per-minute throughput.
        """
        principal.require(Permission.READ)
        return self._store.queue_stats(principal.project_id)
