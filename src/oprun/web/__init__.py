"""The web UI: server-rendered pages over the services, mounted on the API app by `oprun.server`."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Serve the UI from `app`: its static files, sign-in, pages, live fragments and `/docs`."""
    from oprun.api.routing import include
    from oprun.web import audit, docs, routes, session

    app.mount("/static", routes.static_files(), name="static")
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    include(app, docs.router)
    include(app, session.router)
    include(app, routes.router)
    include(app, audit.router)
    include(app, routes.fragments)


__all__ = ["install"]
