"""/docs: the API's Swagger UI, served by this server (it works offline) under the UI's CSP.

Swagger UI's files come from the `fastapi-offline` package (its `static/` folder holds
the Swagger UI 5 distribution); they are served under `/docs/assets/`. The page starts
it with `static/docs.js`: the Content-Security-Policy allows no inline script.
"""

from __future__ import annotations

import importlib.util
from html import escape
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from oprun._version import __version__
from oprun.web.templating import secure, static_url

ASSETS_URL = "/docs/assets"


def assets_dir() -> Path:
    """The folder of Swagger UI's files (`swagger-ui-bundle.js`, `swagger-ui.css`)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed: it ships Swagger UI's files")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


router = APIRouter(include_in_schema=False)


@router.get("/docs")
def docs() -> Response:
    """The Swagger UI page of `/openapi.json`."""
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>oprun {escape(__version__)} API</title>
<link rel="icon" href="{ASSETS_URL}/favicon.png">
<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="{escape(static_url("docs.js"))}"></script>
</body>
</html>
"""
    return secure(HTMLResponse(page))


def assets() -> StaticFiles:
    """Swagger UI's files, for `/docs/assets`."""
    return StaticFiles(directory=assets_dir())
