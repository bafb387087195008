"""The Jinja2 environment of the web UI: templates, filters, versioned static URLs, headers."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from oprun.web import views

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

SECURITY_HEADERS = {
    # Scripts, styles and connections only from this server; no inline code at all.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def static_version() -> str:
    """A digest of every static file, appended to their URLs so browsers refetch on change."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def static_url(name: str) -> str:
    """The URL of a static file, versioned by content."""
    return f"/static/{name}?v={static_version()}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=views.age,
        duration=views.duration,
        clock=views.clock,
        stamp=views.stamp,
        iso=views.iso,
        epoch=views.epoch,
        short_id=views.short_id,
        short_digest=views.short_digest,
        pretty_json=views.pretty_json,
        tone=views.tone,
        counts_text=views.counts_text,
    )
    env.globals["static"] = static_url
    env.globals["views"] = views
    return env


templates = Jinja2Templates(env=_environment())


def secure(response: Response) -> Response:
    """Add the web UI's security headers to `response`."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """Render template `name` with `context` as an HTML response with the security headers."""
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    return secure(response)
