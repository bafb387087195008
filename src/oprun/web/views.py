"""What the pages show, computed in Python: ages, durations, tones, the timeline, sparklines.

Pure functions of records and the store's clock; the templates only lay them out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oprun import _humanize
from oprun.domain.models import Operation, SessionAction, StatusRecord, TaskCounts
from oprun.domain.session_kinds import Described, describe

TONES: dict[str, str] = {
    "QUEUED": "neutral",
    "SCHEDULED": "info",
    "ASSIGNED": "info",
    "RUNNING": "info",
    "CANCELING": "warn",
    "RECLAIMING": "warn",
    "INTERRUPTED": "warn",
    "RECLAIMED": "warn",
    "SUCCEEDED": "ok",
    "FAILED": "bad",
    "CANCELED": "muted",
    "NEVER_ATTEMPTED": "muted",
    "IDLE": "ok",
    "NOT_RESPONDING": "bad",
    "STOPPING": "warn",
    "STOPPED": "muted",
}
"""The colour family of each status (operations, tasks, session actions, workers)."""


def tone(status: str) -> str:
    """The colour family of a status: neutral, info, ok, bad, warn or muted."""
    return TONES.get(str(status), "neutral")


def epoch(value: datetime | None) -> float | None:
    """Epoch seconds of an aware datetime (None stays None)."""
    return None if value is None else value.timestamp()


def age(seconds: float | None) -> str:
    """A short age: `0 s`, `12 s`, `4 min`, `3 h`, `2 d` (`—` for none)."""
    return "—" if seconds is None else _humanize.age(seconds)


def duration(seconds: float | None) -> str:
    """A short duration: `35 ms`, `4.2 s`, `12 s`, `4 min 10 s`, `1 h 2 min`, `3 d 4 h`."""
    return "—" if seconds is None else _humanize.duration(seconds)


def clock(value: datetime | None) -> str:
    """`HH:MM:SS` in UTC (pages turn it into the reader's local time)."""
    return "—" if value is None else value.astimezone(UTC).strftime("%H:%M:%S")


def stamp(value: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS UTC`."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    """ISO 8601 in UTC, for `<time datetime>`."""
    return "" if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def short_id(value: str, keep: int = 10) -> str:
    """`op_…d5c3a1f09b`: the prefix and the last `keep` characters (the random part)."""
    prefix, _, rest = value.partition("_")
    if not rest or len(rest) <= keep + 1:
        return value
    return f"{prefix}_…{rest[-keep:]}"


def short_digest(value: str) -> str:
    """`sha256:1a2b3c4d5e6f`."""
    algo, _, hexa = value.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else value[:19]


def pretty_json(value: Any) -> str:
    """Indented JSON for a `<pre>`."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def counts_text(counts: TaskCounts) -> str:
    """`3/4 tasks done · 1 running`, naming only what is not zero."""
    total = counts.queued + counts.running + counts.succeeded + counts.failed + counts.canceled
    if total == 0:
        return "no tasks yet"
    parts = [f"{counts.succeeded}/{total} {'task' if total == 1 else 'tasks'} done"]
    for name in ("running", "queued", "failed", "canceled"):
        n = getattr(counts, name)
        if n:
            parts.append(f"{n} {name}")
    return " · ".join(parts)


def percent_of(op: Operation) -> float | None:
    """The percent to draw: the reported one, 100 for a success, None while unknown."""
    if op.progress.percent is not None:
        return max(0.0, min(100.0, op.progress.percent))
    if op.status.value == "SUCCEEDED":
        return 100.0
    if op.status.is_terminal() or op.status.value == "QUEUED":
        return 0.0
    return None


def percent_text(op: Operation) -> str:
    """`42%`; `…` while running without a percent; `—` when none was ever reported."""
    pct = percent_of(op)
    if pct is None:
        return "…"
    if op.progress.percent is None and pct == 0:
        return "—"
    return f"{round(pct)}%"


def ran_for(op: Operation, now: float) -> float | None:
    """How long the operation has run (so far, when it still runs)."""
    start = epoch(op.started_at)
    if start is None:
        return None
    end = epoch(op.ended_at)
    return (end if end is not None else now) - start


# -- session actions, session by session --------------------------------------------------
@dataclass(frozen=True)
class SessionActionRow:
    """One session action and what its definition says it does."""

    sa: SessionAction
    what: Described


@dataclass(frozen=True)
class SessionGroup:
    """One session: the worker it ran on and its actions in the order they ran."""

    session_id: str
    worker_id: str
    rows: list[SessionActionRow]
    summary: str
    """`4 actions: 1 env enter, 2 task runs, 1 env exit`."""


def _summary(rows: Sequence[SessionActionRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.what.title] = counts.get(row.what.title, 0) + 1
    parts = [
        f"{n} {title.lower()}{'s' if n > 1 and not title.endswith('s') else ''}"
        for title, n in counts.items()
    ]
    total = len(rows)
    return f"{total} {'action' if total == 1 else 'actions'}: {', '.join(parts)}"


def sessions(actions: Sequence[SessionAction]) -> list[SessionGroup]:
    """Session actions grouped by session, sessions in the order they started.

    Ids sort by creation, so sorting by id puts each session's actions in the order
    they ran (env enter, task runs, env exit) and the sessions in the order they began.
    """
    grouped: dict[str, list[SessionActionRow]] = {}
    for sa in sorted(actions, key=lambda a: a.id):
        grouped.setdefault(sa.session_id, []).append(SessionActionRow(sa, describe(sa.definition)))
    return [
        SessionGroup(
            session_id=session_id,
            worker_id=rows[0].sa.worker_id,
            rows=rows,
            summary=_summary(rows),
        )
        for session_id, rows in grouped.items()
    ]


# -- the status timeline ------------------------------------------------------------------
@dataclass(frozen=True)
class TimelineNode:
    """One status of the history, placed on the drawn timeline."""

    x: int
    y: int
    """Where the node sits on the vertical drawing (narrow screens)."""
    status: str
    tone: str
    at: datetime
    clock: str
    detail: str
    detail_short: str
    gap: str
    """Time since the previous status (empty for the first)."""
    gap_x: int
    segment_tone: str
    """Colour of the segment leading to this node (the previous status's)."""


@dataclass(frozen=True)
class Timeline:
    """The drawing of a status history: nodes on a line, and a tail while it goes on."""

    nodes: list[TimelineNode]
    width: int
    height: int
    line_y: int
    ongoing: bool
    tail_x: int
    summary: str
    v_height: int
    """Height of the vertical drawing, for narrow screens."""
    tail_y: int


TIMELINE_STEP = 132
TIMELINE_PAD = 56
TIMELINE_ROW = 48
TIMELINE_V_MIN = 16 + 3 * TIMELINE_ROW + 16
"""The vertical drawing keeps room for four statuses, so a usual run never grows it."""


def timeline(history: Sequence[StatusRecord], ongoing: bool) -> Timeline:
    """Lay out a status history left to right, evenly spaced, with the time between steps."""
    nodes: list[TimelineNode] = []
    previous: StatusRecord | None = None
    for index, record in enumerate(history):
        x = TIMELINE_PAD + index * TIMELINE_STEP
        detail = record.detail or ""
        gap = "" if previous is None else "+" + duration((record.at - previous.at).total_seconds())
        nodes.append(
            TimelineNode(
                x=x,
                y=16 + index * TIMELINE_ROW,
                status=record.status,
                tone=tone(record.status),
                at=record.at,
                clock=clock(record.at),
                detail=detail,
                detail_short=detail if len(detail) <= 18 else detail[:17] + "…",
                gap=gap,
                gap_x=x - TIMELINE_STEP // 2,
                segment_tone=tone(previous.status) if previous else tone(record.status),
            )
        )
        previous = record
    last_x = nodes[-1].x if nodes else TIMELINE_PAD
    tail_x = last_x + (TIMELINE_STEP // 2 if ongoing else 0)
    width = tail_x + TIMELINE_PAD + (24 if ongoing else 0)
    summary = "; ".join(
        f"{n.status} at {stamp(n.at)}" + (f" ({n.detail})" if n.detail else "") for n in nodes
    )
    last_y = nodes[-1].y if nodes else 16
    tail_y = last_y + (TIMELINE_ROW // 2 if ongoing else 0)
    return Timeline(
        nodes=nodes,
        width=max(width, 2 * TIMELINE_PAD),
        height=96,
        line_y=42,
        ongoing=ongoing,
        tail_x=tail_x,
        summary=summary or "no status recorded yet",
        v_height=max(tail_y + (24 if ongoing else 16), TIMELINE_V_MIN),
        tail_y=tail_y,
    )


# -- the success-rate sparkline ----------------------------------------------------------
@dataclass(frozen=True)
class SparkBar:
    """One run in a sparkline: up for a success, down for a failure, a tick otherwise."""

    x: int
    y: int
    height: int
    tone: str
    label: str


@dataclass(frozen=True)
class Sparkline:
    """Recent runs, oldest first, and the success rate over those that finished."""

    bars: list[SparkBar]
    width: int
    height: int
    succeeded: int
    finished: int
    rate: str
    summary: str


SPARK_BAR = 6
SPARK_HEIGHT = 24


def sparkline(runs_newest_first: Sequence[Operation], slots: int = 20) -> Sparkline:
    """A win/loss sparkline of recent runs (given newest first, drawn oldest first).

    It is `slots` runs wide whatever the count, the newest at the right edge, so
    sparklines in a column line up.
    """
    runs = list(reversed(runs_newest_first[:slots]))
    first = slots - len(runs)
    mid = SPARK_HEIGHT // 2
    bars: list[SparkBar] = []
    succeeded = finished = 0
    for index, op in enumerate(runs):
        status = op.status.value
        if status == "SUCCEEDED":
            y, h = 1, mid - 1
        elif status == "FAILED":
            y, h = mid + 1, mid - 2
        else:
            y, h = mid - 1, 3
        if op.status.is_terminal():
            finished += 1
            succeeded += status == "SUCCEEDED"
        bars.append(
            SparkBar(
                x=(first + index) * SPARK_BAR,
                y=y,
                height=h,
                tone=tone(status),
                label=f"{op.id} {status}",
            )
        )
    if finished:
        rate = f"{round(100 * succeeded / finished)}%"
        summary = f"{succeeded} of the last {finished} finished runs succeeded ({rate})"
    else:
        rate = "—"
        summary = "no finished runs yet" if runs else "no runs yet"
    return Sparkline(
        bars=bars,
        width=slots * SPARK_BAR,
        height=SPARK_HEIGHT,
        succeeded=succeeded,
        finished=finished,
        rate=rate,
        summary=summary,
    )


# -- the per-minute throughput chart of a queue -----------------------------------------
@dataclass(frozen=True)
class ThroughputBar:
    """One minute of a queue's last hour: how many of its tasks ended then."""

    x: int
    y: int
    height: int
    count: int
    label: str


@dataclass(frozen=True)
class ThroughputChart:
    """A queue's last hour as one bar per minute (oldest on the left), scaled to the peak."""

    bars: list[ThroughputBar]
    width: int
    height: int
    total: int
    peak: int
    summary: str


THROUGHPUT_BAR = 3
THROUGHPUT_HEIGHT = 28


def throughput_chart(per_minute: Sequence[int], now: datetime) -> ThroughputChart:
    """Bars of tasks ended per minute, the current minute at the right edge.

    Minutes with nothing ended draw no bar (the baseline shows through); any minute
    with something draws at least 2 px, so a single task stays visible next to a peak.
    """
    minutes = len(per_minute)
    peak = max(per_minute, default=0)
    total = sum(per_minute)
    bars: list[ThroughputBar] = []
    for index, count in enumerate(per_minute):
        if count <= 0:
            continue
        height = max(2, round((THROUGHPUT_HEIGHT - 1) * count / peak))
        start = now.timestamp() - 60 * (minutes - index)
        bars.append(
            ThroughputBar(
                x=index * THROUGHPUT_BAR,
                y=THROUGHPUT_HEIGHT - 1 - height,
                height=height,
                count=count,
                label=f"{clock(datetime.fromtimestamp(start, UTC))} UTC: {count} ended",
            )
        )
    if total:
        summary = (
            f"{total} {'task' if total == 1 else 'tasks'} ended in the last hour, "
            f"at most {peak} in one minute, {per_minute[-1] if minutes else 0} in the last minute"
        )
    else:
        summary = "no tasks ended in the last hour"
    return ThroughputChart(
        bars=bars,
        width=max(minutes, 1) * THROUGHPUT_BAR,
        height=THROUGHPUT_HEIGHT,
        total=total,
        peak=peak,
        summary=summary,
    )
