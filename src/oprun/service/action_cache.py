"""A per-process cache of the action versions invocations resolve.

A saved version never changes, so `(project, name, version)` is cached for good.
Which version is the *latest* does change (a save in any process): an entry for
`(project, name, latest)` is only a guess. The operations made from it are written
as `CheckedOperation`s: their transaction checks that the guess is still the latest
version and raises `StaleAction` otherwise, and the caller forgets the guess and
resolves again. So a cached guess costs one primary-key read inside the write
transaction instead of a read transaction of its own, and a redefinition in another
process is seen by the very next invocation: nothing rests on a NOTIFY arriving.
"""

from __future__ import annotations

import threading

from oprun.domain.models import Action
from oprun.store import Store

MAX_ENTRIES = 10_000
"""Entries kept before the cache starts over (a bound, not a policy: misses re-read)."""


class ActionCache:
    """Action versions by `(project_id, name, version)`; `version` None: the latest seen."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, int | None], Action] = {}

    def get(
        self, project_id: str, name: str, version: int | None, *, fresh: bool = False
    ) -> Action:
        """The version (default the latest as last seen; `fresh`: read now), or NotFound."""
        key = (project_id, name, version)
        if not fresh:
            with self._lock:
                hit = self._entries.get(key)
            if hit is not None:
                return hit
        action = self._store.get_action(project_id, name, version)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = action
            self._entries[(project_id, name, action.version)] = action
        return action

    def forget_latest(self, project_id: str, name: str) -> None:
        """Drop the guess of an action's latest version (it was found stale)."""
        with self._lock:
            self._entries.pop((project_id, name, None), None)
