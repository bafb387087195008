"""The web UI: server-rendered pages over the services, mounted on the API app by `oprun.server`."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Serve the UI from `app`: its static files, sign-in, pages and live fragments."""
    from oprun.web import routes, session

    app.mount("/static", routes.static_files(), name="static")
    app.include_router(session.router)
    app.include_router(routes.router)
    app.include_router(routes.fragments)


__all__ = ["install"]
