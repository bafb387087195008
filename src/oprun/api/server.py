"""Run the API server: open the store, bootstrap the first token, serve with uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import uvicorn

from oprun.api.app import create_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import Store, open_store

log = logging.getLogger("oprun.server")


@dataclass(frozen=True)
class Bootstrapped:
    """What a first start created: the project and its admin token's secret."""

    project_id: str
    secret: str


def open_services(settings: Settings) -> tuple[Services, Bootstrapped | None]:
    """Migrate and open the store, bootstrap an empty database, wire the services."""
    store: Store = open_store(settings.database_url)
    made = bootstrap(store, settings.bootstrap_token)
    services = Services.build(store, settings)
    return services, (Bootstrapped(made[0].id, made[1]) if made else None)


def uvicorn_server(services: Services, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the API over `services` (call `.serve()` in a loop)."""
    config = uvicorn.Config(
        create_app(services),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)
