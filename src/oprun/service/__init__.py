"""Use cases: the only writers of state and the only users of the store. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from oprun.domain.errors import Unavailable
from oprun.service import reaper, retention
from oprun.service.actions import ActionService
from oprun.service.audit import AuditService
from oprun.service.auth import Authenticator, Principal, TokenService, bootstrap
from oprun.service.events import EventService
from oprun.service.metrics import Metrics
from oprun.service.operations import OperationService
from oprun.service.queues import QueueService
from oprun.service.retention import RetentionService
from oprun.service.settings import Settings
from oprun.service.workers import WorkerService
from oprun.store import Store, open_store
from oprun.store.migrate import head_revision, known_revisions, upgrade

__all__ = [
    "Bootstrapped",
    "Principal",
    "Services",
    "Settings",
    "open_services",
    "upgrade_database",
]


@dataclass(frozen=True)
class Services:
    """Every use case, over one store that no caller outside `service/` sees."""

    settings: Settings
    auth: Authenticator
    tokens: TokenService
    actions: ActionService
    operations: OperationService
    workers: WorkerService
    queues: QueueService
    events: EventService
    retention: RetentionService
    metrics: Metrics
    audit: AuditService
    _store: Store = field(repr=False)

    @classmethod
    def build(cls, store: Store, settings: Settings) -> Services:
        """Wire the services over `store`."""
        auth = Authenticator(store, settings.token_cache_seconds, settings.auth_failures)
        metrics = Metrics(store)
        return cls(
            settings=settings,
            auth=auth,
            tokens=TokenService(store, auth),
            actions=ActionService(store),
            operations=OperationService(store, metrics),
            workers=WorkerService(store, settings, metrics),
            queues=QueueService(store),
            events=EventService(store),
            retention=RetentionService(store, settings),
            metrics=metrics,
            audit=AuditService(store),
            _store=store,
        )

    def now(self) -> float:
        """The store's clock in epoch seconds: pages show ages against it, not the web server's."""
        return self._store.now()

    def check_ready(self) -> str:
        """The database's schema revision, once the database answers and has this code's schema.

        A schema newer than this code (a newer oprun migrated it during a rolling
        upgrade) still counts as ready: migrations only add, so this process keeps
        working on it (a process starting now refuses it, see `upgrade`).

        Raises:
            Unavailable: the database does not answer (`details.check` is "database"),
                or its schema is older than this code needs ("schema").
        """
        try:
            revision = self._store.schema_revision()
        except Unavailable as exc:
            raise Unavailable(exc.message, check="database", **exc.details) from exc
        expected = head_revision()
        if revision is None or (revision != expected and revision in known_revisions()):
            raise Unavailable(
                f"the database schema is at revision {revision or 'none'}, older than this "
                f"server's {expected}: run `oprun db upgrade`",
                check="schema",
                schema=revision,
                expected=expected,
            )
        return revision

    async def reap_forever(self) -> None:
        """Keep the database in shape in the background until cancelled.

        Reaps lapsed leases and deadlines every `reap_interval` seconds, and purges what
        retention lets go every `retention_interval` seconds.
        """
        await asyncio.gather(
            reaper.reap_forever(self._store, self.settings, self.metrics),
            retention.purge_forever(self._store, self.settings),
        )

    def shutdown(self) -> None:
        """The server is stopping: long polls and event streams answer now, new ones at once."""
        self._store.notifier.shutdown()

    def close(self) -> None:
        """Release the store's connections (after the server stopped)."""
        self._store.close()


@dataclass(frozen=True)
class Bootstrapped:
    """What a first start created: the project and its admin token's secret."""

    project_id: str
    secret: str


def open_services(settings: Settings) -> tuple[Services, Bootstrapped | None]:
    """Migrate and open the store, bootstrap an empty database, wire the services.

    Returns the services and, when this start created the first project and admin
    token, what it created (the secret is shown once).
    """
    store = open_store(settings.database_url)
    made = bootstrap(store, settings.bootstrap_token)
    services = Services.build(store, settings)
    return services, (Bootstrapped(made[0].id, made[1]) if made else None)


def upgrade_database(database_url: str) -> None:
    """Apply every schema migration to the database (`open_services` also does, at start)."""
    upgrade(database_url)
