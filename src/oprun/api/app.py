"""The API application: routers, error shape, body limit and the reaper (not the web UI)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from oprun._version import __version__
from oprun.api import (
    actions,
    audit,
    errors,
    events,
    observability,
    openapi,
    operations,
    queues,
    tokens,
    workers,
)
from oprun.api.limits import RequestLimits
from oprun.api.routing import include
from oprun.domain.errors import Unavailable
from oprun.service import Services


def create_app(services: Services, *, run_reaper: bool = True) -> FastAPI:
    """The API over `services`; with `run_reaper`, lapsed leases are reaped in the background.

    The web UI is not part of it: the composition root (`oprun.server.build_app`)
    mounts it on this app.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(services.reap_forever())
        if not run_reaper:
            task.cancel()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="oprun",
        version=__version__,
        summary="Long-running operations: define actions, run them on workers, follow each run.",
        lifespan=lifespan,
        # Swagger UI is served from this server by the web UI (`oprun.web.docs`), not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)

    # Outside the app's own middleware, so it answers a crash in any of them or a route.
    app.add_middleware(errors.CrashGuard)
    # Around that: bodies, credentials and URLs are held to their limits before any work.
    app.add_middleware(RequestLimits)
    # Around even that: request ids, the access log and request metrics see its 500s and 413s.
    observability.install(app, services)

    for module in (operations, actions, queues, workers, tokens, events, audit):
        include(app, module.router)

    @app.get("/v1/healthz", tags=["health"], operation_id="health")
    def health() -> dict[str, str]:
        """Liveness: the process answers. It never touches the database."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/v1/readyz",
        tags=["health"],
        operation_id="ready",
        responses=openapi.error_responses(Unavailable),
    )
    def ready() -> dict[str, str]:
        """Readiness: the database answers and its schema is not older than this server's.

        503 `UNAVAILABLE` (with `Retry-After`) otherwise; `details.check` says which
        (`database` or `schema`).
        """
        schema = services.check_ready()
        return {"status": "ready", "version": __version__, "schema": schema}

    openapi.install(app)
    return app
