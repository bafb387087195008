"""The server's composition root: open the services, build the API, mount the web UI, serve.

The one module that puts the server's parts together: `service` holds the use cases
over the store, `api` serves them over HTTP and knows nothing of the web UI, `web`
adds its pages to an app. `oprun up`, `oprun server` and the tests start here.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from oprun import web
from oprun.api.app import create_app
from oprun.domain.limits import MAX_HEADER_BYTES
from oprun.service import Bootstrapped, Services, open_services

__all__ = ["Bootstrapped", "build_app", "open_services", "uvicorn_server"]


def build_app(services: Services, *, run_reaper: bool = True) -> FastAPI:
    """The server's app: the API over `services` with the web UI mounted on it.

    With `run_reaper`, lapsed leases are reaped in the background (see `create_app`).
    """
    app = create_app(services, run_reaper=run_reaper)
    web.install(app)
    return app


def uvicorn_server(services: Services, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the API and web UI over `services` (call `.serve()` in a loop)."""
    config = uvicorn.Config(
        build_app(services),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # the app writes its own (oprun.api.observability)
        log_config=None,  # uvicorn's lines go through oprun.logs, in its format
        lifespan="on",
        timeout_graceful_shutdown=5,
        # h11, not httptools: httptools reads a request head of any size (a 50 MB header
        # would be buffered whole); h11 refuses one over this limit before the app runs.
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    return uvicorn.Server(config)
