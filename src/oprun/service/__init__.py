"""Use cases: the only writers of state. Knows nothing of HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from oprun.service.actions import ActionService
from oprun.service.auth import Authenticator, Principal, TokenService
from oprun.service.operations import OperationService
from oprun.service.queues import QueueService
from oprun.service.settings import Settings
from oprun.service.workers import WorkerService
from oprun.store import Store

__all__ = ["Principal", "Services", "Settings"]


@dataclass(frozen=True)
class Services:
    """Every use case, over one store."""

    store: Store
    settings: Settings
    auth: Authenticator
    tokens: TokenService
    actions: ActionService
    operations: OperationService
    workers: WorkerService
    queues: QueueService

    @classmethod
    def build(cls, store: Store, settings: Settings) -> Services:
        """Wire the services over `store`."""
        auth = Authenticator(store, settings.token_cache_seconds)
        return cls(
            store=store,
            settings=settings,
            auth=auth,
            tokens=TokenService(store, auth),
            actions=ActionService(store),
            operations=OperationService(store),
            workers=WorkerService(store, settings),
            queues=QueueService(store),
        )
