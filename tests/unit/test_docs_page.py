"""/docs works offline: Swagger UI's page and files come from this server, under the UI's CSP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store
from oprun.web.templating import SECURITY_HEADERS

ADMIN = "oprun_docs_unit_admin"


@pytest.fixture
def get(tmp_path: Path) -> Iterator[object]:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, ADMIN)
    services = Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))
    app = build_app(services, run_reaper=False)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def call(path: str) -> httpx.Response:
        return loop.run_until_complete(client.get(path))

    try:
        yield call
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
        services.close()


def test_docs_names_no_external_url_and_its_assets_answer(get):
    page = get("/docs")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    html = page.text
    assert "//" not in re.sub(r"<!doctype html>", "", html, flags=re.I), html
    assert "<script>" not in html  # the CSP allows no inline script
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(urls) == 4, urls
    kinds = {}
    for url in urls:
        assert url.startswith("/"), url
        asset = get(url.replace("&amp;", "&"))
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
        kinds[url.split("?")[0].rsplit(".", 1)[-1]] = asset.headers["content-type"]
    assert kinds["js"].startswith(("text/javascript", "application/javascript"))
    assert kinds["css"].startswith("text/css")
    assert "SwaggerUIBundle" in get("/docs/assets/swagger-ui-bundle.js").text[:2000]
    assert 'url: "/openapi.json"' in get(urls[-1].replace("&amp;", "&")).text


def test_the_document_it_shows_is_served_and_nothing_calls_a_cdn(get):
    assert get("/openapi.json").status_code == 200
    for gone in ("/redoc", "/docs/oauth2-redirect"):
        assert get(gone).status_code == 404
