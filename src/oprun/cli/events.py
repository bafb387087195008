"""``oprun events``: the project's events as they happen."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from oprun.cli._common import state
from oprun.domain import models


def event_line(event: models.Event) -> str:
    """One event as one line: id, time, type, entity and data."""
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{event.id}  {event.at.isoformat()}  {event.type}  {event.entity_id}  {data}"


def events(
    ctx: typer.Context,
    after: Annotated[
        int | None,
        typer.Option(
            "--after", min=0, help="Start after this event id (0: from the first); default: now."
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="TYPE", help="Only this type (operation.status, ...); repeat."
        ),
    ] = None,
    entity: Annotated[
        str | None, typer.Option("--entity", help="Only events about this id (op_..., wk_...).")
    ] = None,
    max_events: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many events.")
    ] = None,
) -> None:
    """Print the project's events as they happen, until Ctrl-C (or --max).

    Reconnects by itself after a dropped connection or a server restart, missing nothing. With -o json, prints one JSON object per line.

    Example: oprun events --after 0 --type operation.status --max 20
    """
    st = state(ctx)
    stream = st.client().events.stream(after, types=types or None, entity_id=entity)
    try:
        for count, event in enumerate(stream, start=1):
            if st.json:
                typer.echo(event.model_dump_json())
            else:
                typer.echo(event_line(event))
            if max_events is not None and count >= max_events:
                break
    finally:
        stream.close()
