"""Retention: the projects' own limits, and the purge of what they let go, in small batches.

A purge transaction deletes at most a batch of finished operations with every row
recorded about them; on PostgreSQL it skips operations another transaction holds
(`FOR UPDATE SKIP LOCKED`). It reads and deletes only finished work, through
indexes (`ix_operations_ended`, then each child table's operation index), so it
never waits on a claim nor makes one wait for a lock: claims lock only waiting
tasks. On SQLite, where every writer takes the database in turn, a batch is kept
short instead (see `MAX_TASKS` and `MAX_LOG_BYTES`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property

from sqlalchemy import Connection, delete, func, select, tuple_, update

from oprun.domain.audit import AuditEntry
from oprun.domain.errors import NotFound
from oprun.domain.retention import Boundary, RetentionSettings
from oprun.domain.status import OperationStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase
from oprun.store.kept import KeptBoundaries
from oprun.store.outages import unavailable_on_outage

FINISHED = [s.value for s in OperationStatus if s.is_terminal()]
MAX_TASKS = 2_000
"""Tasks a purge transaction deletes at most (with their attempts and history), unless
its first operation alone has more."""
MAX_LOG_BYTES = 8 * 1024 * 1024
"""Log bytes a purge transaction deletes at most, unless its first operation alone has more."""

_op = t.operations.c


class RetentionQueries(StoreBase):
    """A project's retention settings and the purge of finished operations and old events."""

    serial_writes = False
    """Whether write transactions take the database one at a time (SQLite overrides it)."""

    def get_retention(self, project_id: str) -> RetentionSettings:
        """The project's own retention settings (null fields: the server's default), or NotFound."""
        with self.read() as conn:
            row = conn.execute(
                select(t.projects.c.retention_days, t.projects.c.retention_max_operations).where(
                    t.projects.c.id == project_id
                )
            ).first()
        if row is None:
            raise NotFound(f"no project {project_id}", id=project_id)
        return RetentionSettings(days=row[0], max_operations=row[1])

    def set_retention(
        self, project_id: str, settings: RetentionSettings, *, audit: AuditEntry | None = None
    ) -> RetentionSettings:
        """Replace the project's own retention settings, or NotFound; `audit` is recorded."""
        with self.write() as tx:
            before = tx.conn.execute(
                select(t.projects.c.retention_days, t.projects.c.retention_max_operations)
                .where(t.projects.c.id == project_id)
                .with_for_update()
            ).first()
            changed = tx.conn.execute(
                update(t.projects)
                .where(t.projects.c.id == project_id)
                .values(
                    retention_days=settings.days,
                    retention_max_operations=settings.max_operations,
                )
            ).rowcount
            if changed and before is not None and audit is not None:
                tx.audit(
                    audit.about(
                        project_id,
                        days=settings.days,
                        max_operations=settings.max_operations,
                        previous={"days": before[0], "max_operations": before[1]},
                    )
                )
        if not changed:
            raise NotFound(f"no project {project_id}", id=project_id)
        return settings

    def list_retention(self) -> list[tuple[str, RetentionSettings]]:
        """Every project's id with its own retention settings."""
        with self.read() as conn:
            rows = conn.execute(
                select(
                    t.projects.c.id,
                    t.projects.c.retention_days,
                    t.projects.c.retention_max_operations,
                ).order_by(t.projects.c.id)
            ).all()
        return [(r[0], RetentionSettings(days=r[1], max_operations=r[2])) for r in rows]

    def oldest_kept(self, project_id: str, keep: int) -> Boundary | None:
        """The oldest of the project's `keep` newest finished operations (None: fewer exist).

        Followed from this process's last call by what changed since (`oprun.store.kept`):
        a call reads the operations finished since, not all `keep` of them.
        """
        with self._snapshot() as conn:
            return self._kept_boundaries.oldest_kept(conn, self._db_now, project_id, keep)

    @cached_property
    def _kept_boundaries(self) -> KeptBoundaries:
        """Each project's count-limit boundary as this process follows it (made at first use)."""
        return KeptBoundaries()

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one snapshot of the database."""
        with unavailable_on_outage(), self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def purge_operations(self, project_id: str, before: Boundary, limit: int) -> int:
        """Delete up to `limit` of the project's finished operations that sort before `before`.

        Oldest first, each with its tasks, sessions, session actions, quarantines,
        status history and logs, in one transaction. Returns how many were deleted
        (fewer than `limit` also when a batch reached `MAX_TASKS` or `MAX_LOG_BYTES`).
        """
        clear, followed = self._kept_boundaries.clear_before(project_id, before)
        if clear:
            return 0  # none before the boundary, and none finished since: no query at all
        purgeable = (
            _op.project_id == project_id,
            _op.ended_at.isnot(None),
            tuple_(_op.ended_at, _op.id) < tuple_(before.ended_at, before.id),
            _op.status.in_(FINISHED),
        )
        with self.read() as conn:
            if conn.execute(select(_op.id).where(*purgeable).limit(1)).first() is None:
                self._kept_boundaries.found_clear(project_id, before, followed)
                return 0  # nothing to purge: no write transaction (nor SQLite's write lock)
        with self.write() as tx:
            found = tx.conn.execute(
                select(
                    _op.id,
                    (
                        _op.n_queued
                        + _op.n_running
                        + _op.n_succeeded
                        + _op.n_failed
                        + _op.n_canceled
                    ).label("tasks"),
                    _op.log_bytes,
                )
                .where(*purgeable)
                .order_by(_op.ended_at, _op.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            ids = _within_budget(found)
            if ids:
                _delete_operations(tx.conn, ids)
            return len(ids)

    def purge_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest events, those recorded before `before`.

        The newest event is always kept: SQLite gives a new row the highest id plus
        one, so an emptied table would hand out ids that streams already saw.
        """
        with self.read() as conn:
            first = conn.execute(
                select(t.events.c.seq, t.events.c.at).order_by(t.events.c.seq).limit(1)
            ).first()
            if first is None or first.at >= before:
                return 0  # nothing is old enough: a round reads one row, and writes nothing
        with self.write() as tx:
            newest = tx.conn.execute(select(func.max(t.events.c.seq))).scalar()
            oldest = tx.conn.execute(
                select(t.events.c.seq, t.events.c.at).order_by(t.events.c.seq).limit(limit)
            ).all()
            gone = 0
            last = None
            for seq, at in oldest:
                if at >= before or seq >= newest:
                    break
                gone, last = gone + 1, seq
            if last is not None:
                tx.conn.execute(delete(t.events).where(t.events.c.seq <= last))
            return gone


def _within_budget(found: Sequence[tuple[str, int, int]]) -> list[str]:
    """The first operations of `found` whose tasks and logs fit one purge transaction."""
    ids: list[str] = []
    tasks = log_bytes = 0
    for op_id, n_tasks, n_bytes in found:
        tasks += n_tasks
        log_bytes += n_bytes
        if ids and (tasks > MAX_TASKS or log_bytes > MAX_LOG_BYTES):
            break
        ids.append(op_id)
    return ids


def _delete_operations(conn: Connection, ids: list[str]) -> None:
    """Delete operations `ids` and every row recorded about them, children first."""
    attempts = select(t.session_actions.c.id).where(t.session_actions.c.operation_id.in_(ids))
    tasks = select(t.tasks.c.id).where(t.tasks.c.operation_id.in_(ids))
    history = t.status_history.c.entity_id
    conn.execute(delete(t.status_history).where(history.in_(attempts)))
    conn.execute(delete(t.status_history).where(history.in_(tasks)))
    conn.execute(delete(t.status_history).where(history.in_(ids)))
    conn.execute(delete(t.logs).where(t.logs.c.operation_id.in_(ids)))
    conn.execute(delete(t.session_actions).where(t.session_actions.c.operation_id.in_(ids)))
    conn.execute(delete(t.sessions).where(t.sessions.c.operation_id.in_(ids)))
    conn.execute(delete(t.quarantines).where(t.quarantines.c.operation_id.in_(ids)))
    conn.execute(delete(t.tasks).where(t.tasks.c.operation_id.in_(ids)))
    conn.execute(delete(t.operations).where(_op.id.in_(ids)))
