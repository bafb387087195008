"""Retention: a project's own limits, and the purge every API process runs in the background.

Each round, for every project, the purge deletes the finished operations that its
retention lets go (older than its age limit, or beyond its newest `max_operations`),
oldest first, in small transactions; then the events older than the events'
retention. Between two transactions it rests `PAUSE_RATIO` times as long as the
last one took, so a backlog (retention just turned on over a large database) is
worked off steadily while claims and reports keep the database nearly to
themselves. Where a count limit falls is followed from round to round by the store
(`oprun.store.kept`): a round reads what changed since the last, not the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from anyio.to_thread import run_sync

from oprun.domain.audit import AuditKind
from oprun.domain.retention import (
    Retention,
    RetentionSettings,
    age_boundary,
    effective,
    purge_boundary,
)
from oprun.domain.roles import Permission
from oprun.service.audit import entry
from oprun.service.auth import Principal
from oprun.service.settings import Settings
from oprun.store import Store

log = logging.getLogger("oprun.retention")

TARGET_SECONDS = 0.02
"""How long a purge transaction aims to take where writes go one at a time (SQLite):
there every other writer (a claim, a report) waits while it runs. Each batch is sized
from how long the last one took. On PostgreSQL a purge locks only finished rows, so its
batches are `BATCH` operations."""
FEWEST = 20
"""The smallest batch, however slow the database: the purge must still get through."""
BATCH = 500
"""Finished operations deleted per transaction at most (fewer when they have many tasks)."""
EVENTS_BATCH = 5_000
"""Events deleted per transaction at most."""
PAUSE_RATIO = 9.0
"""Rest after each purge transaction, as a multiple of the time it took: the purge holds
the database at most a tenth of the time."""


class RetentionService:
    """Reading and setting the retention of the caller's project."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    def get(self, principal: Principal) -> Retention:
        """The project's own retention settings and what the purge applies."""
        principal.require(Permission.READ)
        own = self._store.get_retention(principal.project_id)
        return effective(own, self._settings.retention)

    def set(self, principal: Principal, settings: RetentionSettings) -> Retention:
        """Replace the project's own retention settings (admin); null takes the server's."""
        principal.require(Permission.MANAGE)
        own = self._store.set_retention(
            principal.project_id, settings, audit=entry(principal, AuditKind.RETENTION_CHANGED)
        )
        return effective(own, self._settings.retention)


@dataclass(frozen=True)
class Purged:
    """What one purge round deleted."""

    operations: int
    events: int


async def purge_forever(store: Store, settings: Settings) -> None:
    """Purge what retention lets go every `retention_interval` seconds until cancelled."""
    while True:
        try:
            purged = await purge_round(store, settings)
            if purged.operations or purged.events:
                log.info("event=purged operations=%d events=%d", purged.operations, purged.events)
        except Exception:
            log.exception("event=purge_failed")
        await asyncio.sleep(settings.retention_interval)


async def purge_round(
    store: Store, settings: Settings, *, batch: int = BATCH, pause_ratio: float = PAUSE_RATIO
) -> Purged:
    """Purge every project's finished operations past its retention, then old events."""
    now = await run_sync(store.now)
    operations = 0
    for project_id, own in await run_sync(store.list_retention):
        policy = effective(own, settings.retention)
        keep = policy.effective_max_operations
        by_count = await run_sync(store.oldest_kept, project_id, keep) if keep else None
        before = purge_boundary(age_boundary(policy.effective_days, now), by_count)
        if before is not None:
            operations += await _in_batches(
                partial(store.purge_operations, project_id, before),
                batch,
                pause_ratio,
                timed=store.serial_writes,
            )
    events = 0
    keep_events = settings.events_retention_seconds
    if keep_events is not None:
        events = await _in_batches(
            partial(store.purge_events, now - keep_events),
            EVENTS_BATCH,
            pause_ratio,
            timed=store.serial_writes,
        )
    return Purged(operations, events)


async def _in_batches(
    purge: Callable[[int], int], most: int, pause_ratio: float, *, timed: bool
) -> int:
    """Call `purge(limit)` until it deletes nothing, resting between transactions; how many.

    With `timed`, each batch is sized to take about `TARGET_SECONDS`; else it is `most`.
    """
    total = 0
    limit = min(FEWEST, most) if timed else most
    while True:
        started = time.monotonic()
        done = await run_sync(purge, limit)
        took = time.monotonic() - started
        if not done:
            return total
        total += done
        if timed:
            limit = next_limit(limit, done, took, most)
        await asyncio.sleep(took * pause_ratio)


def next_limit(limit: int, done: int, took: float, most: int) -> int:
    """The next batch's size: what fits `TARGET_SECONDS` at the last one's pace.

    It at most doubles from one batch to the next, and stays within `FEWEST` and `most`.
    """
    fits = int(done * TARGET_SECONDS / max(took, 1e-6))
    return max(min(FEWEST, most), min(most, 2 * limit, fits))
