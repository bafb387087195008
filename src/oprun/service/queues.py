"""Use cases on queues: how much work waits, runs and ends in each."""

from __future__ import annotations

import re

from oprun.domain.errors import ValidationError
from oprun.domain.limits import MAX_NAME_LENGTH
from oprun.domain.models import NAME_PATTERN, Queue, QueueSettings, QueueStats
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

    def configure(self, principal: Principal, name: str, settings: QueueSettings) -> Queue:
        """Set a queue's priority and concurrency limit, creating the queue if new."""
        principal.require(Permission.MANAGE)
        if not re.match(NAME_PATTERN, name) or len(name) > MAX_NAME_LENGTH:
            raise ValidationError(f"invalid queue name {name!r}", field="name")
        return self._store.configure_queue(
            principal.project_id, name, settings.priority, settings.max_concurrency
        )
