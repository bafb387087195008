"""Endpoint builders of actions: save, get, list, versions; `openjd` definitions. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from oprun.domain import models
from oprun.sdk._endpoints._common import parse_model
from oprun.sdk._requests import Call, from_pydantic, segment

_PARSE_ACTION = parse_model(models.Action)


def save_action(definition: models.ActionDefinition) -> Call[models.Action]:
    """``POST /v1/actions``: save a version (200 when an identical one exists)."""
    return Call("POST", "/v1/actions", _PARSE_ACTION, json=definition.model_dump(mode="json"))


def openjd_definition(
    name: str,
    *,
    template: Mapping[str, Any] | str | None = None,
    command: Sequence[str] | None = None,
    queue: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    retry: models.RetryPolicy | Mapping[str, Any] | None = None,
    requirements: models.Requirements | Mapping[str, Any] | None = None,
    quarantine_after: int | None = None,
    cacheable: bool | None = None,
    description: str | None = None,
) -> models.ActionDefinition:
    """An ``openjd`` action definition; options left as None keep the definition's defaults.

    Raises:
        ValidationError: a field is not valid (the template itself is checked by the
            server, with openjd-model).
    """
    options: dict[str, Any] = {
        "queue": queue,
        "timeout": timeout,
        "max_attempts": max_attempts,
        "retry": retry,
        "requirements": requirements,
        "quarantine_after": quarantine_after,
        "cacheable": cacheable,
        "description": description,
    }
    fields = {k: v for k, v in options.items() if v is not None}
    if template is not None:
        fields["template"] = template if isinstance(template, str) else dict(template)
    if command is not None:
        fields["command"] = list(command)
    try:
        return models.ActionDefinition(name=name, kind=models.ActionKind.OPENJD, **fields)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, "action definition") from None


def get_action(name: str, version: int | None = None) -> Call[models.Action]:
    """``GET /v1/actions/{name}``: the latest version, or `version`."""
    return Call(
        "GET",
        f"/v1/actions/{segment(name)}",
        _PARSE_ACTION,
        params={"version": version},
        retry_safe=True,
    )


def list_actions(cursor: str | None, limit: int | None) -> Call[models.Page[models.Action]]:
    """``GET /v1/actions``: one page of the latest version of each action."""
    return Call(
        "GET",
        "/v1/actions",
        parse_model(models.Page[models.Action]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )


def action_versions(
    name: str, cursor: str | None, limit: int | None
) -> Call[models.Page[models.Action]]:
    """``GET /v1/actions/{name}/versions``: one page of an action's versions."""
    return Call(
        "GET",
        f"/v1/actions/{segment(name)}/versions",
        parse_model(models.Page[models.Action]),
        params={"cursor": cursor, "limit": limit},
        retry_safe=True,
    )
