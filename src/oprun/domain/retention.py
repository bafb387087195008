"""How long finished operations are kept: a project's own settings over the server's.

A finished operation (SUCCEEDED, FAILED or CANCELED) is purged with everything
recorded about it (tasks, sessions, session actions, status history, logs) once it
ended more than `days` ago, or once `max_operations` newer finished operations of
its project exist. Unfinished operations are never purged. Events are a stream kept
for a time of their own (`OPRUN_EVENTS_RETENTION_HOURS`), whatever they are about.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from oprun.domain.models import Input, Model

SECONDS_PER_DAY = 86_400.0
MAX_DAYS = 36_500.0
"""A hundred years: the longest retention one can set (to keep a project's operations
for good while the server's default purges those of others)."""


class RetentionSettings(Input):
    """A project's own retention, as an admin sets it; null takes the server's default."""

    days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DAYS,
        description="finished operations are purged this many days after they ended",
    )
    max_operations: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="at most this many finished operations are kept (the newest)",
    )


class Retention(Model):
    """A project's retention: its own settings and what the purge applies."""

    days: float | None
    """The project's own age limit in days; null: the server's default applies."""
    max_operations: int | None
    """The project's own count limit; null: the server's default applies."""
    effective_days: float | None
    """The age limit the purge applies (null: finished operations are kept at any age)."""
    effective_max_operations: int | None
    """The count limit the purge applies (null: no limit)."""


def effective(own: RetentionSettings, server: RetentionSettings) -> Retention:
    """A project's retention: each of its own settings, or else the server's."""
    return Retention(
        days=own.days,
        max_operations=own.max_operations,
        effective_days=own.days if own.days is not None else server.days,
        effective_max_operations=(
            own.max_operations if own.max_operations is not None else server.max_operations
        ),
    )


class Boundary(NamedTuple):
    """A place in a project's finished operations, ordered by (`ended_at`, `id`).

    Those strictly before it are purged. The id breaks ties between operations that
    ended in the same transaction, so a count limit is exact.
    """

    ended_at: float
    id: str


def age_boundary(days: float | None, now: float) -> Boundary | None:
    """Before this, operations are older than `days` (None: no age limit)."""
    if days is None:
        return None
    return Boundary(now - days * SECONDS_PER_DAY, "")  # "" sorts before every id


def purge_boundary(by_age: Boundary | None, by_count: Boundary | None) -> Boundary | None:
    """Where purging stops: the later of the two limits (None: nothing to purge)."""
    found = [b for b in (by_age, by_count) if b is not None]
    return max(found) if found else None
