"""Use cases on queues: how much work waits, runs and ends in each."""

from __future__ import annotations

import re

from oprun.domain.audit import AuditKind
from oprun.domain.errors import ValidationError
from oprun.domain.limits import MAX_NAME_LENGTH
from oprun.domain.models import NAME_PATTERN, Page, Queue, QueueSettings, QueueStats
from oprun.domain.roles import Permission
from oprun.service.audit import entry
from oprun.service.auth import Principal
from oprun.service.cursor import paged
from oprun.store import Store


def _position(after: str | None) -> tuple[int, str] | None:
    """The `(priority, name)` a queue cursor holds; a 400 when it holds anything else."""
    if after is None:
        return None
    priority, _, name = after.partition(":")
    try:
        number = int(priority)
    except ValueError:
        number = None
    if number is None or not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_NAME_LENGTH:
        raise ValidationError("invalid cursor; pass back next_cursor as given", field="cursor")
    return number, name


class QueueService:
    """Reading the queues of the caller's project."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def page(
        self, principal: Principal, page_cursor: str | None, limit: int | None
    ) -> Page[QueueStats]:
        """One page of the project's queues, highest priority first, then by name.

        Each with its depth, running work and the last hour's per-minute throughput.
        The cursor holds the last queue's `priority:name` (a name has no colon).
        """
        principal.require(Permission.READ)

        def fetch(after: str | None, size: int) -> list[QueueStats]:
            return self._store.queue_stats(principal.project_id, _position(after), size)

        return paged(page_cursor, limit, fetch, lambda q: f"{q.priority}:{q.name}")

    def configure(self, principal: Principal, name: str, settings: QueueSettings) -> Queue:
        """Set a queue's priority and concurrency limit, creating the queue if new."""
        principal.require(Permission.MANAGE)
        if not re.match(NAME_PATTERN, name) or len(name) > MAX_NAME_LENGTH:
            raise ValidationError(f"invalid queue name {name!r}", field="name")
        return self._store.configure_queue(
            principal.project_id,
            name,
            settings.priority,
            settings.max_concurrency,
            audit=entry(principal, AuditKind.QUEUE_CONFIGURED),
        )
