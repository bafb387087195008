"""The OpenAPI document tells the truth: errors in the one shape, who authenticates, no 422."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from oprun.api.openapi import PUBLIC, api_routes
from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store

ADMIN = "oprun_openapi_unit_admin"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, ADMIN)
    services = Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))
    try:
        yield build_app(services, run_reaper=False)
    finally:
        services.close()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _authenticates(route: APIRoute) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        if getattr(dependant.call, "__name__", None) in ("principal", "_metrics_reader"):
            return True
        stack += dependant.dependencies
    return False


def test_every_operation_documents_its_errors_in_the_error_shape_and_never_422(app):
    spec = app.openapi()
    operations = list(_operations(spec))
    assert len(operations) >= 32
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method, operation in operations:
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        errors = {s for s in responses if s.startswith(("4", "5"))}
        assert {"400", "413", "500"} <= errors, (method, path)
        for status in errors:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == error, (method, path, status)
        if "{" in path:
            assert "404" in errors, (method, path)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    detail = schemas["ErrorBody"]["properties"]["error"]
    assert detail == {"$ref": "#/components/schemas/ErrorDetail"}
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "details"}
    assert "VALIDATION" in schemas["ErrorDetail"]["properties"]["code"]["enum"]


def test_conflicts_and_unknown_actions_are_documented_where_they_happen(app):
    by_id = {op["operationId"]: op for _, _, op in _operations(app.openapi())}
    assert "409" in by_id["cancelOperation"]["responses"]
    assert "409" in by_id["deleteOperation"]["responses"]
    assert "409" in by_id["revokeToken"]["responses"]  # the last admin token
    assert "404" in by_id["invokeAction"]["responses"]
    assert "503" in by_id["ready"]["responses"]
    assert "401" not in by_id["health"]["responses"]


def test_every_authenticated_operation_requires_the_bearer_token(app):
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "an API token"}
    assert schemes["session"]["in"] == "cookie"
    routes = {r.operation_id: r for r in api_routes(app)}
    for path, method, operation in _operations(spec):
        route = routes[operation["operationId"]]
        if operation["operationId"] in PUBLIC:
            assert not _authenticates(route)
            assert "security" not in operation
            continue
        assert _authenticates(route), (method, path)
        assert {"bearer": []} in operation["security"], (method, path)
        assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
    assert {"health", "ready"} == PUBLIC


def test_a_method_a_route_does_not_answer_is_405_method_not_allowed(app):
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.delete("/v1/healthz")

    response = asyncio.run(call())
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["allow"] == "GET"


def test_the_app_holds_its_routes_itself_not_included_routers(app: FastAPI) -> None:
    # An included router is matched route by route on every request, twice, through
    # FastAPI's scope bookkeeping (`oprun.api.routing.include`).
    layered = [route for route in app.routes if hasattr(route, "original_router")]
    assert layered == []
    assert len(api_routes(app)) > 40
