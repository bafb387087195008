"""What every endpoint builder shares: answer parsers, page sizes, idempotency keys. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import httpx
import pydantic

from oprun.domain import models
from oprun.domain.limits import MAX_PAGE_SIZE

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")

TokenCreated = models.TokenCreated
ProjectCreated = models.ProjectCreated

ActionRef = str | models.Action | models.ActionDefinition
"""An action named by its name, or given as a saved action or a definition."""


def parse_model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """A parser of a JSON answer into the pydantic model `cls`."""

    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def parse_typed(tp: type[T]) -> Callable[[httpx.Response], T]:
    """A parser of a JSON answer into `tp` (a list of models, a dict, ...)."""
    adapter: pydantic.TypeAdapter[T] = pydantic.TypeAdapter(tp)

    def parse(response: httpx.Response) -> T:
        return adapter.validate_json(response.content)

    return parse


def parse_nothing(_: httpx.Response) -> None:
    """The parser of an answer whose body says nothing (204, a stream read elsewhere)."""
    return


def page_size(limit: int | None, page_size: int | None) -> int | None:
    """The page size to ask for: `page_size`, else no more than `limit` needs, within bounds."""
    size = page_size or (min(limit, MAX_PAGE_SIZE) if limit else None)
    return None if size is None else max(1, min(size, MAX_PAGE_SIZE))


def new_idempotency_key() -> str:
    """A fresh idempotency key, so that retrying an invocation can never run it twice."""
    return f"sdk-{uuid.uuid4().hex}"


def action_name(action: ActionRef) -> str:
    """The name of an action given by name, saved action or definition."""
    return action if isinstance(action, str) else action.name
