"""Paging: opaque cursors (clients pass them back, never build them) and one page helper."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from oprun.domain.errors import ValidationError
from oprun.domain.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from oprun.domain.models import Page
from oprun.domain.text import refuse, walk

T = TypeVar("T")


def encode(value: Any) -> str:
    """A cursor holding `value`."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode(cursor: str | None, kind: type[str] | type[int] = str) -> Any:
    """The value in a cursor (None for no cursor), a `kind` the store can compare with.

    A damaged cursor, or one holding anything but a storable `kind` (a string without
    NUL or lone surrogates, an integer within 64 bits), is a 400.
    """
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if type(value) is not kind:
            raise ValueError(f"a cursor holds a {kind.__name__}")
        walk(value, refuse)
    except ValueError as exc:
        raise ValidationError(
            "invalid cursor; pass back next_cursor as given", field="cursor"
        ) from exc
    return value


def page_size(limit: int | None) -> int:
    """A page size within bounds."""
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit")
    return limit


def paged(
    page_cursor: str | None,
    limit: int | None,
    fetch: Callable[[Any, int], Sequence[T]],
    key: Callable[[T], Any],
    kind: type[str] | type[int] = str,
) -> Page[T]:
    """One page of a keyset-ordered list.

    `fetch(after, size)` reads up to `size` items after the position decoded from
    `page_cursor` (None for the first page), a `kind` (the type of `key`). A full
    page names the next cursor by `key` of its last item; a short page is the last
    one (its `next_cursor` is None).
    Raises `ValidationError` for a damaged cursor or a `limit` out of bounds.
    """
    size = page_size(limit)
    items = list(fetch(decode(page_cursor, kind), size))
    nxt = encode(key(items[-1])) if len(items) == size else None
    return Page[T](items=items, next_cursor=nxt)
