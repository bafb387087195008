"""Server settings, from arguments or `OPRUN_*` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """Where `oprun up` keeps its SQLite file and admin token."""
    return Path(os.environ.get("OPRUN_DATA_DIR", "~/.local/share/oprun")).expanduser()


def default_database_url() -> str:
    """`OPRUN_DATABASE_URL`, else a SQLite file in the data directory."""
    url = os.environ.get("OPRUN_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{default_data_dir() / 'oprun.db'}"


@dataclass(frozen=True)
class Settings:
    """How the server behaves."""

    database_url: str = field(default_factory=default_database_url)
    lease_seconds: float = field(
        default_factory=lambda: float(os.environ.get("OPRUN_LEASE_SECONDS", "30"))
    )
    """How long a claimed task stays owned without a heartbeat."""
    reap_interval: float = field(
        default_factory=lambda: float(os.environ.get("OPRUN_REAP_INTERVAL", "2"))
    )
    """How often each API process looks for lapsed leases."""
    bootstrap_token: str | None = field(
        default_factory=lambda: os.environ.get("OPRUN_BOOTSTRAP_TOKEN") or None
    )
    """The first admin token's secret; generated when unset."""
    token_cache_seconds: float = 5.0
    """How long a verified token is trusted before it is looked up again."""
    worker_silence_seconds: float | None = field(
        default_factory=lambda: _float_or_none(os.environ.get("OPRUN_WORKER_SILENCE"))
    )
    """After how long without a heartbeat a worker is NOT_RESPONDING (and told to stop
    when it comes back); three lease periods when unset."""

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


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None
