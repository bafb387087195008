"""The OpenAPI document, told true: the error shape, who must authenticate, and no 422.

FastAPI describes a route by its happy path and adds a 422 that this server never
answers (`api/errors.py` turns every validation failure into 400 `VALIDATION`).
`install` replaces `app.openapi` with a document that, for every operation:

- lists the errors it can answer, each with the `ErrorBody` schema: 400, 413 and
  500 for every route (the request's edge, `api/limits.py`, holds for all of them),
  401, 403, 429 and 503 for a route that authenticates (the token is looked up in
  the database; an address that failed too often is throttled), 404 for a route with an id in its path, and what a route declares
  itself with `responses=error_responses(...)` (409 of cancel and delete);
- requires the bearer token (or the web UI's session cookie) unless it is a probe;
- has no 422, and the document no `HTTPValidationError`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field

from oprun.domain.errors import (
    ERRORS_BY_CODE,
    AccessDenied,
    AuthenticationError,
    NotFound,
    OprunError,
    ServerError,
    Throttled,
    TooLarge,
    Unavailable,
    ValidationError,
)

PUBLIC = frozenset({"health", "ready"})
"""Operations anyone may call: the probes. `metrics` is open only when the server says so."""
OPTIONAL_AUTH = frozenset({"metrics"})
"""Operations whose token the server may waive (`OPRUN_METRICS_PUBLIC=1`)."""
BEARER = "bearer"
SESSION = "session"


class ErrorDetail(BaseModel):
    """What went wrong: a code from the error table, a message for people, details for code."""

    code: str = Field(
        description="one of " + ", ".join(f"`{c}`" for c in ERRORS_BY_CODE),
        json_schema_extra={"enum": list(ERRORS_BY_CODE)},
    )
    message: str
    details: dict[str, Any] = Field(
        description="machine-readable context: `field`, `reason`, `limit`, ..."
    )


class ErrorBody(BaseModel):
    """Every error answer of the API: `{"error": {code, message, details}}`."""

    error: ErrorDetail


def _ref() -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}


def error_responses(*errors: type[OprunError]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for these errors, each in the error shape."""
    return {
        cls.http_status: {
            "model": ErrorBody,
            "description": f"`{cls.code}`: {(cls.__doc__ or '').strip()}",
        }
        for cls in errors
    }


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of `app`, through the routers it includes."""
    found = (context.original_route for context in iter_route_contexts(app.routes))
    return [route for route in found if isinstance(route, APIRoute)]


def errors_of(route: APIRoute) -> list[type[OprunError]]:
    """The errors every route of this kind can answer (what a route adds is its own)."""
    errors: list[type[OprunError]] = [ValidationError, TooLarge, ServerError]
    if route.operation_id not in PUBLIC:
        errors += [AuthenticationError, AccessDenied, Throttled, Unavailable]
    if route.dependant.path_params:
        errors.append(NotFound)
    return errors


def _correct(app: FastAPI, spec: dict[str, Any]) -> None:
    """Make FastAPI's document of `app` true, in place."""
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas[ErrorBody.__name__] = body
    components["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "an API token"},
        SESSION: {
            "type": "apiKey",
            "in": "cookie",
            "name": "oprun_session",
            "description": "the web UI's session (state changes need a same-origin `Origin`)",
        },
    }
    routes = {r.operation_id: r for r in api_routes(app)}
    for path in spec["paths"].values():
        for operation in path.values():
            responses = operation["responses"]
            responses.pop("422", None)
            route = routes.get(operation.get("operationId"))
            if route is None:
                continue
            for status, response in error_responses(*errors_of(route)).items():
                responses.setdefault(
                    str(status),
                    {
                        "description": response["description"],
                        "content": {"application/json": {"schema": _ref()}},
                    },
                )
            if route.operation_id not in PUBLIC:
                required: list[dict[str, list[str]]] = [{BEARER: []}, {SESSION: []}]
                if route.operation_id in OPTIONAL_AUTH:
                    required.append({})
                operation["security"] = required


def install(app: FastAPI) -> None:
    """Serve FastAPI's document, made true by `_correct`, as the app's (built on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _correct(app, FastAPI.openapi(app))  # FastAPI keeps it as app.openapi_schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
