"""Server settings, from arguments or `OPRUN_*` environment variables (pydantic-settings).

Each setting is read from its variable (`OPRUN_LEASE_SECONDS`, ...) unless given as an
argument; an empty variable counts as unset. A value that is not valid raises
`oprun.ValidationError` naming the variable, its value and what was expected
(`Settings.load`), which the CLI prints as one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from oprun.domain.errors import ValidationError
from oprun.domain.retention import MAX_DAYS, SECONDS_PER_DAY, RetentionSettings
from oprun.domain.throttle import FailureRule


def default_data_dir() -> Path:
    """Where `oprun up` keeps its SQLite file and admin token (`OPRUN_DATA_DIR`)."""
    return Path(os.environ.get("OPRUN_DATA_DIR", "~/.local/share/oprun")).expanduser()


def default_database_url() -> str:
    """A SQLite file in the data directory: the database when `OPRUN_DATABASE_URL` is unset."""
    return f"sqlite:///{default_data_dir() / 'oprun.db'}"


class Settings(BaseSettings):
    """How the server behaves.

    Arguments win over the environment: ``Settings(database_url=url)`` still reads
    the lease, reap interval and bootstrap token from theirs.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        populate_by_name=True,  # Settings(lease_seconds=...) as well as OPRUN_LEASE_SECONDS
        case_sensitive=True,
        env_ignore_empty=True,
        extra="forbid",
    )

    database_url: str = Field(
        default_factory=default_database_url, validation_alias="OPRUN_DATABASE_URL"
    )
    """``sqlite:///path`` or ``postgresql://...``; a SQLite file under `OPRUN_DATA_DIR` by default."""
    lease_seconds: float = Field(default=30.0, gt=0, validation_alias="OPRUN_LEASE_SECONDS")
    """How long a claimed task stays owned without a heartbeat."""
    reap_interval: float = Field(default=2.0, gt=0, validation_alias="OPRUN_REAP_INTERVAL")
    """How often each API process looks for lapsed leases."""
    bootstrap_token: str | None = Field(
        default=None, repr=False, validation_alias="OPRUN_BOOTSTRAP_TOKEN"
    )
    """The first admin token's secret; generated when unset."""
    worker_silence_seconds: float | None = Field(
        default=None, gt=0, validation_alias="OPRUN_WORKER_SILENCE"
    )
    """After how long without a heartbeat a worker is NOT_RESPONDING (and told to stop
    when it comes back); three lease periods when unset."""
    retention_days: float | None = Field(
        default=None, gt=0, le=MAX_DAYS, validation_alias="OPRUN_RETENTION_DAYS"
    )
    """Finished operations are purged this many days after they ended, with their tasks,
    attempts, history and logs; unset: kept for good. A project may set its own."""
    retention_max_operations: int | None = Field(
        default=None, ge=1, validation_alias="OPRUN_RETENTION_MAX_OPERATIONS"
    )
    """Each project keeps at most this many finished operations (the newest); unset: no
    limit. A project may set its own."""
    events_retention_hours: float | None = Field(
        default=None, gt=0, validation_alias="OPRUN_EVENTS_RETENTION_HOURS"
    )
    """Events are purged this many hours after they happened; unset: as long as
    `OPRUN_RETENTION_DAYS` keeps operations (kept for good when that is unset too)."""
    retention_interval: float = Field(
        default=60.0, gt=0, validation_alias="OPRUN_RETENTION_INTERVAL"
    )
    """How often each API process purges what retention lets go (seconds)."""

    metrics_public: bool = Field(default=False, validation_alias="OPRUN_METRICS_PUBLIC")
    """Serve `/metrics` to anyone who can reach it (a scraper on a private network);
    otherwise it needs an admin token of the server's first project."""
    access_log: Literal["on", "all", "off"] = Field(
        default="on", validation_alias="OPRUN_ACCESS_LOG"
    )
    """One log line per request: `on` for all but `/metrics` and the health probes,
    `all` for those too, `off` for none."""

    auth_failure_limit: int = Field(default=20, ge=1, validation_alias="OPRUN_AUTH_FAILURE_LIMIT")
    """Failed authentications (a wrong, revoked or expired token) one client address may
    make within `OPRUN_AUTH_FAILURE_WINDOW` before it is answered 429 `THROTTLED`; per
    API process."""
    auth_failure_window: float = Field(
        default=60.0, gt=0, le=86_400, validation_alias="OPRUN_AUTH_FAILURE_WINDOW"
    )
    """The window of `OPRUN_AUTH_FAILURE_LIMIT`, in seconds."""

    token_cache_seconds: ClassVar[float] = 5.0
    """How long a verified token is trusted before it is looked up again."""

    @classmethod
    def load(cls, **given: Any) -> Settings:
        """The settings from `given` values and the environment, checked.

        Raises:
            ValidationError: a value is not valid; the message names its variable
                (or argument), the value and what was expected.
        """
        try:
            return cls(**given)
        except pydantic.ValidationError as exc:
            raise _invalid(exc) from None

    @property
    def retention(self) -> RetentionSettings:
        """The server's default retention of finished operations, for every project."""
        return RetentionSettings(
            days=self.retention_days, max_operations=self.retention_max_operations
        )

    @property
    def events_retention_seconds(self) -> float | None:
        """How long events are kept, in seconds (None: for good)."""
        if self.events_retention_hours is not None:
            return self.events_retention_hours * 3600
        if self.retention_days is not None:
            return self.retention_days * SECONDS_PER_DAY
        return None

    @property
    def auth_failures(self) -> FailureRule:
        """How many failed authentications per client address, within how long."""
        return FailureRule(limit=self.auth_failure_limit, window=self.auth_failure_window)

    @property
    def worker_silence(self) -> float:
        """After how long without a heartbeat a worker is NOT_RESPONDING.

        Longer than a lease on purpose: a worker starved for a moment loses the leases
        that lapsed (their work runs elsewhere) but keeps serving; only one silent for
        several lease periods is given up for lost and told to stop.
        """
        if self.worker_silence_seconds is not None:
            return self.worker_silence_seconds
        return 3 * self.lease_seconds


def _invalid(exc: pydantic.ValidationError) -> ValidationError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    return ValidationError(
        f"{where}={first.get('input')!r} is not valid: {first['msg']}",
        field=where,
    )
