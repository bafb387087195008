"""Tables and summaries for the CLI's table output (every value shown as plain text)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from oprun import _humanize
from oprun.domain import models
from oprun.domain.session_kinds import describe
from oprun.domain.status import OperationStatus
from oprun.sdk import Operation

STATUS_STYLES = {
    "QUEUED": "dim",
    "SCHEDULED": "cyan",
    "ASSIGNED": "cyan",
    "RUNNING": "blue",
    "CANCELING": "yellow",
    "RECLAIMING": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELED": "yellow",
    "INTERRUPTED": "yellow",
    "RECLAIMED": "yellow",
    "NEVER_ATTEMPTED": "dim",
    "IDLE": "green",
    "NOT_RESPONDING": "red",
    "STOPPING": "yellow",
    "STOPPED": "dim",
}


def status_text(status: str) -> Text:
    """A status, coloured by what it means."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def age(at: datetime | None, now: datetime | None = None) -> str:
    """How long ago `at` was, in its largest unit: ``45s``, ``3m``, ``2h``, ``4d``."""
    if at is None:
        return "-"
    now = now or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return _humanize.age((now - at).total_seconds(), compact=True)


def duration(start: datetime | None, end: datetime | None) -> str:
    """Seconds between two times, or ``-``."""
    if start is None or end is None:
        return "-"
    return _humanize.duration((end - start).total_seconds(), compact=True)


def percent(progress: models.Progress) -> str:
    """A progress percentage, or ``-``."""
    return "-" if progress.percent is None else f"{progress.percent:.0f}%"


def as_json(value: Any) -> str:
    """A value as compact JSON."""
    return json.dumps(value, default=str, ensure_ascii=False)


def _t(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


def operations_table(ops: Iterable[Operation]) -> Table:
    """``ops list``: one row per operation."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "ACTION", "STATUS", "STEP", "PROGRESS", "CREATED BY", "AGE"):
        table.add_column(column, no_wrap=column in ("ID", "STATUS"))
    for op in ops:
        table.add_row(
            _t(op.id),
            _t(f"{op.kind}@{op.action_version}"),
            status_text(op.state),
            _t(op.step_code),
            _t(percent(op.progress)),
            _t(op.created_by),
            _t(age(op.created_at)),
        )
    return table


def _fields(rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in rows:
        table.add_row(Text(name), value if isinstance(value, Text) else _t(value))
    return table


def operation_detail(op: Operation) -> RenderableType:
    """``ops get``: every field of an operation, then its status history."""
    counts = op.progress.counts
    rows: list[tuple[str, Any]] = [
        ("id", op.id),
        ("action", f"{op.kind}@{op.action_version}"),
        ("status", status_text(op.state)),
        ("step", op.step_code),
        ("progress", f"{percent(op.progress)} {op.progress.message or ''}".strip()),
        (
            "tasks",
            f"queued {counts.queued}, running {counts.running}, succeeded {counts.succeeded}, "
            f"failed {counts.failed}, canceled {counts.canceled}",
        ),
        ("queue", op.queue),
        ("worker", op.worker_id),
        ("attempts", f"{op.attempts}/{op.max_attempts}"),
        ("created by", op.created_by),
        ("created", f"{op.created_at.isoformat()} ({age(op.created_at)} ago)"),
        ("started", op.started_at.isoformat() if op.started_at else None),
        ("ended", op.ended_at.isoformat() if op.ended_at else None),
        ("duration", duration(op.started_at, op.ended_at)),
        ("parameters", as_json(op.parameters)),
    ]
    if op.idempotency_key:
        rows.append(("idempotency key", op.idempotency_key))
    if op.status is OperationStatus.SUCCEEDED or op.result is not None:
        rows.append(("result", as_json(op.result)))
    if op.error is not None:
        rows.append(("error", Text(f"{op.error.code}: {op.error.message}", style="red")))
    if op.exit_reason:
        rows.append(("exit reason", op.exit_reason))
    history = Table(title="status history", title_justify="left", box=None, pad_edge=False)
    for column in ("AT", "STATUS", "DETAIL"):
        history.add_column(column)
    for record in op.history:
        history.add_row(_t(record.at.isoformat()), status_text(record.status), _t(record.detail))
    return Group(_fields(rows), Text(""), history)


def outcome_line(op: Operation) -> Text:
    """One line saying how an operation ended."""
    text = Text(f"{op.id} {op.kind} ")
    text.append_text(status_text(op.state))
    if op.started_at and op.ended_at:
        text.append(f" in {duration(op.started_at, op.ended_at)}")
    if op.error is not None:
        text.append(f": {op.error.code}: {op.error.message}")
    return text


def actions_table(actions: Iterable[models.Action]) -> Table:
    """``actions list``: one row per action (its latest version)."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "VERSION", "KIND", "QUEUE", "PARAMETERS", "CREATED"):
        table.add_column(column)
    for action in actions:
        d = action.definition
        table.add_row(
            _t(action.name),
            _t(f"{action.version}/{action.latest_version}"),
            _t(d.kind.value),
            _t(d.queue),
            _t(", ".join(f"{p.name}:{p.type}" for p in d.parameters)),
            _t(age(action.created_at)),
        )
    return table


def _how_it_runs(d: models.ActionDefinition) -> list[tuple[str, Any]]:
    """A python action's entrypoint; an openjd action's command or template steps."""
    if d.kind is not models.ActionKind.OPENJD:
        return [("entrypoint", d.entrypoint)]
    if d.command:
        return [("command", shlex.join(d.command))]
    steps = d.template.get("steps") if isinstance(d.template, dict) else None
    names = [str(s.get("name")) for s in steps or () if isinstance(s, dict)]
    return [("steps", ", ".join(names) or None)]


def action_detail(action: models.Action) -> RenderableType:
    """``actions get``: an action version and its parameters."""
    d = action.definition
    fields = _fields(
        [
            ("name", action.name),
            ("version", f"{action.version} (latest {action.latest_version})"),
            ("id", action.id),
            ("digest", action.digest),
            ("kind", d.kind.value),
            *_how_it_runs(d),
            ("queue", d.queue),
            ("timeout", None if d.timeout is None else f"{d.timeout:g}s"),
            ("max attempts", d.max_attempts),
            ("retry on", ", ".join(d.retry.retry_on) or None),
            ("cacheable", d.cacheable),
            ("description", d.description),
            ("created", action.created_at.isoformat()),
        ]
    )
    params = Table(title="parameters", title_justify="left", box=None, pad_edge=False)
    for column in ("NAME", "TYPE", "REQUIRED", "DEFAULT", "ALLOWED", "DESCRIPTION"):
        params.add_column(column)
    for p in d.parameters:
        params.add_row(
            _t(p.name),
            _t(p.type),
            _t("yes" if p.required else "no"),
            _t(None if p.required else as_json(p.default)),
            _t(None if p.allowed is None else as_json(p.allowed)),
            _t(p.description),
        )
    return Group(fields, Text(""), params)


def concurrency(limit: int | None) -> str:
    """A queue's concurrency limit: the number, or ``no limit``."""
    return "no limit" if limit is None else str(limit)


def queues_table(queues: Iterable[models.QueueStats]) -> Table:
    """``queues list``: settings, tasks waiting and running, and the last hour's outcomes."""
    table = Table(box=None, pad_edge=False)
    columns = ("NAME", "PRIORITY", "MAX CONCURRENCY", "QUEUED", "RUNNING", "SUCCEEDED 1H")
    for column in (*columns, "FAILED 1H"):
        table.add_column(column, justify="left" if column == "NAME" else "right")
    for q in queues:
        table.add_row(
            _t(q.name),
            _t(q.priority),
            _t(concurrency(q.max_concurrency)),
            _t(q.depth),
            _t(q.running),
            _t(q.succeeded),
            Text(str(q.failed), style="red" if q.failed else ""),
        )
    return table


def queue_line(queue: models.Queue) -> str:
    """``queues set``: a queue's settings on one line."""
    return (
        f"{queue.name}: priority {queue.priority}, "
        f"max concurrency {concurrency(queue.max_concurrency)}"
    )


def workers_table(workers: Iterable[models.Worker]) -> Table:
    """``workers list``."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "HOST", "STATUS", "QUEUES", "LAST HEARTBEAT"):
        table.add_column(column)
    for w in workers:
        table.add_row(
            _t(w.id),
            _t(w.name),
            _t(w.hostname),
            status_text(w.status.value),
            _t(", ".join(w.queues)),
            _t(age(w.last_heartbeat_at)),
        )
    return table


def tokens_table(tokens: Iterable[models.Token]) -> Table:
    """``tokens list`` (secrets are never shown: the server does not keep them)."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "ROLE", "CREATED", "REVOKED", "EXPIRES", "LAST USED"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            _t(t.id),
            _t(t.name),
            _t(t.role.value),
            _t(t.created_at.isoformat()),
            _t(t.revoked_at.isoformat() if t.revoked_at else None),
            _t(t.expires_at.isoformat() if t.expires_at else None),
            _t(t.last_used_at.isoformat() if t.last_used_at else None),
        )
    return table


def tasks_table(tasks: Iterable[models.Task]) -> Table:
    """``ops tasks``: one row per task of an operation, oldest first."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STEP", "STATUS", "ATTEMPTS", "PARAMETERS", "UPDATED"):
        table.add_column(column)
    for t in tasks:
        table.add_row(
            _t(t.id),
            _t(t.step_id),
            status_text(t.status.value),
            _t(f"{t.attempts}/{t.max_attempts}"),
            _t(as_json(t.parameters) if t.parameters else None),
            _t(age(t.updated_at) + " ago"),
        )
    return table


def _ran(start: datetime | None, end: datetime | None) -> str:
    """How long it ran: ``4.2s``; ``4.2s…`` while it still runs; ``-`` before it started."""
    if start is None:
        return "-"
    if end is None:
        return duration(start, datetime.now(UTC)) + "…"
    return duration(start, end)


def _progress(percent_: float | None, message: str | None) -> str:
    text = "" if percent_ is None else f"{percent_:.0f}%"
    if message:
        text = f"{text} {message if len(message) <= 40 else message[:39] + '…'}"
    return text.strip()


def session_actions_table(actions: Iterable[models.SessionAction]) -> Table:
    """``session-actions list``: grouped by session, each session's actions in the order they ran.

    Sessions come in the order they started; a session's id is shown on its first row.
    """
    by_session: dict[str, list[models.SessionAction]] = {}
    for sa in actions:
        by_session.setdefault(sa.session_id, []).append(sa)
    table = Table(box=None, pad_edge=False)
    columns = (
        "SESSION",
        "ID",
        "KIND",
        "STATUS",
        "WORKER",
        "STARTED",
        "DURATION",
        "EXIT",
        "PROGRESS",
    )
    for column in columns:
        table.add_column(column, no_wrap=column in ("SESSION", "ID", "STATUS"))
    for session_id, group in by_session.items():
        for index, sa in enumerate(sorted(group, key=lambda a: a.id)):
            table.add_row(
                _t(session_id) if index == 0 else Text(""),
                _t(sa.id),
                _t(str(describe(sa.definition))),
                status_text(sa.status.value),
                _t(sa.worker_id),
                _t(f"{age(sa.started_at)} ago" if sa.started_at else None),
                _t(_ran(sa.started_at, sa.ended_at)),
                _t(sa.process_exit_code),
                _t(_progress(sa.progress_percent, sa.progress_message)),
            )
    return table


def _when(at: datetime | None) -> str | None:
    return None if at is None else f"{at.isoformat()} ({age(at)} ago)"


def session_action_detail(sa: models.SessionAction) -> RenderableType:
    """``session-actions get``: every field of a session action, then its status history."""
    what = describe(sa.definition)
    rows: list[tuple[str, Any]] = [
        ("id", sa.id),
        ("kind", what.kind),
    ]
    if what.environment_id is not None:
        rows.append(("environment", what.environment_id))
    if what.step_id is not None:
        rows.append(("step", what.step_id))
    if what.parameters:
        rows.append(("parameters", what.parameters_text))
    rows += [
        ("status", status_text(sa.status.value)),
        ("operation", sa.operation_id),
        ("session", sa.session_id),
        ("task", sa.task_id),
        ("worker", sa.worker_id),
        ("lease epoch", sa.lease_epoch),
        ("started", _when(sa.started_at)),
        ("ended", _when(sa.ended_at)),
        ("duration", _ran(sa.started_at, sa.ended_at)),
        ("worker updated", _when(sa.worker_updated_at)),
        ("progress", _progress(sa.progress_percent, sa.progress_message) or None),
        ("exit code", sa.process_exit_code),
        ("definition", as_json(sa.definition)),
    ]
    history = Table(title="status history", title_justify="left", box=None, pad_edge=False)
    for column in ("AT", "STATUS", "DETAIL"):
        history.add_column(column)
    for record in sa.history:
        history.add_row(_t(record.at.isoformat()), status_text(record.status), _t(record.detail))
    return Group(_fields(rows), Text(""), history)
