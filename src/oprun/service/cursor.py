"""Opaque page cursors: clients pass them back, never build them."""

from __future__ import annotations

import base64
import json
from typing import Any

from oprun.domain.errors import ValidationError
from oprun.domain.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE


def encode(value: Any) -> str:
    """A cursor holding `value`."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode(cursor: str | None) -> Any:
    """The value in a cursor (None for no cursor); a damaged cursor is a 400."""
    if not cursor:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:
        raise ValidationError(
            "invalid cursor; pass back next_cursor as given", field="cursor"
        ) from exc


def page_size(limit: int | None) -> int:
    """A page size within bounds."""
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit")
    return limit
