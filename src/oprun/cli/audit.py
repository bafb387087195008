"""``oprun audit ...``: the audit log of security-relevant events (needs an admin token)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from oprun.cli._common import print_json, state, stdout
from oprun.cli.tokens import duration_seconds
from oprun.domain.audit import AuditKind, AuditRecord

app = typer.Typer(
    help="Read the audit log: tokens, action versions, queues, projects, retention and "
    "failed sign-ins (needs an admin token).\n\nExample: oprun audit list --kind token.created",
    no_args_is_help=True,
)

DEFAULT_LIMIT = 50


def when(text: str | None, option: str) -> datetime | None:
    """A time given as ISO 8601 (UTC without a zone) or as a duration ago (`2h`, `7d`)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - timedelta(seconds=duration_seconds(text))
        except typer.BadParameter:
            raise typer.BadParameter(
                f"{text!r} is neither a time (2026-11-30T10:00:00) nor a duration ago (2h, 7d)",
                param_hint=option,
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cell(value: object) -> Text:
    return Text("-" if value is None or value == "" else str(value))


def audit_table(rows: Iterable[AuditRecord]) -> Table:
    """``audit list``: one row per event, newest first (every value plain text)."""
    table = Table(box=None, pad_edge=False)
    for column in ("AT", "KIND", "ACTOR", "CLIENT", "SUBJECT", "REQUEST", "DETAILS"):
        table.add_column(column)
    for row in rows:
        actor = None
        if row.actor is not None:
            role = row.actor.role.value if row.actor.role else "?"
            actor = f"{row.actor.name or row.actor.token_id} ({role})"
        table.add_row(
            _cell(row.at.isoformat(timespec="seconds")),
            _cell(row.kind),
            _cell(actor),
            _cell(row.client),
            _cell(row.subject),
            _cell(row.request_id),
            _cell(json.dumps(row.details, ensure_ascii=False, sort_keys=True)),
        )
    return table


@app.command("list")
def list_audit(
    ctx: typer.Context,
    kind: Annotated[
        AuditKind | None,
        typer.Option("--kind", case_sensitive=False, help="Only this kind of event."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", metavar="TOKEN_ID", help="Only what this token did."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="WHEN", help="From this time (ISO 8601, UTC) or this long ago (2h)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="WHEN", help="Before this time, or this long ago."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many (newest first).")
    ] = DEFAULT_LIMIT,
) -> None:
    """List audit events, newest first: who did what, from which address and request.

    An admin sees their project's events; an admin of the server's first project also
    sees the server's own (failed sign-ins whose token matches no project).

    Example: oprun audit list --kind auth.failed --since 1h
    """
    st = state(ctx)
    rows = list(
        st.client().audit.list(
            kind=kind,
            actor=actor,
            since=when(since, "--since"),
            until=when(until, "--until"),
            limit=limit,
        )
    )
    if st.json:
        print_json([r.model_dump(mode="json") for r in rows])
    else:
        stdout().print(audit_table(rows))
