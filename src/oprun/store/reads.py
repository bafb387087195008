"""Read queries on operations, tasks, session actions, logs, events and queue statistics."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property

from sqlalchemy import Connection, Integer, and_, bindparam, cast, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from oprun.domain.errors import NotFound
from oprun.domain.models import (
    Event,
    LogRecord,
    Operation,
    QueueStats,
    SessionAction,
    StatusRecord,
    Task,
)
from oprun.domain.status import OperationStatus
from oprun.store import rows
from oprun.store import schema as t
from oprun.store.base import StoreBase, at
from oprun.store.deletions import SEALED_AFTER
from oprun.store.throughput import MINUTES, WINDOW, FinalEnds

_h = t.status_history
_HISTORY_JSON = (
    select(
        func.json_agg(
            aggregate_order_by(func.json_build_array(_h.c.status, _h.c.detail, _h.c.at), _h.c.seq)
        )
    )
    .where(_h.c.entity_id == t.operations.c.id)
    .scalar_subquery()
    .label("history_json")
)
"""An operation's status history as one JSON array of [status, detail, at] (PostgreSQL)."""
_ONE = (
    t.operations.c.id == bindparam("id"),
    t.operations.c.project_id == bindparam("project_id"),
)
# Built once: a statement made per call costs its construction and cache key each time.
_OPERATION = select(t.operations).where(*_ONE)
_OPERATION_WITH_HISTORY = select(t.operations, _HISTORY_JSON).where(*_ONE)

THROUGHPUT_MINUTES = MINUTES
"""How many one-minute buckets a queue's throughput covers (the last hour)."""


class ReadQueries(StoreBase):
    """What clients read."""

    @cached_property
    def _final_ends(self) -> FinalEnds:
        """The final end times of recently ended tasks this store keeps (made at first use)."""
        return FinalEnds()

    def _history(self, conn: Connection, entity_id: str) -> list[StatusRecord]:
        return rows.history(
            conn.execute(
                select(t.status_history)
                .where(t.status_history.c.entity_id == entity_id)
                .order_by(t.status_history.c.seq)
            ).all()
        )

    def get_operation(self, project_id: str, operation_id: str) -> Operation:
        """One operation with its status history, or NotFound (also for other projects)."""
        ids = {"id": operation_id, "project_id": project_id}
        if self.dialect_name == "postgresql":
            # One statement (its history aggregated beside it), outside a transaction:
            # one round trip, where BEGIN, two SELECTs and COMMIT were four.
            with self.read_one() as conn:
                row = conn.execute(_OPERATION_WITH_HISTORY, ids).first()
            if row is None:
                raise NotFound(f"no operation {operation_id}", id=operation_id)
            return rows.operation(row, rows.history_of_json(row.history_json))
        with self.read() as conn:
            row = conn.execute(_OPERATION, ids).first()
            if row is None:
                raise NotFound(f"no operation {operation_id}", id=operation_id)
            return rows.operation(row, self._history(conn, operation_id))

    def find_by_idempotency_key(self, project_id: str, key: str) -> str | None:
        """The id of the project's operation created with this idempotency key."""
        with self.read() as conn:
            return conn.execute(
                select(t.operations.c.id).where(
                    t.operations.c.project_id == project_id,
                    t.operations.c.idempotency_key == key,
                )
            ).scalar()

    def list_operations(
        self,
        project_id: str,
        *,
        status: OperationStatus | None = None,
        action: str | None = None,
        created_by: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[Operation]:
        """Operations of a project, newest first, older than the id `before`."""
        query = (
            select(t.operations)
            .where(t.operations.c.project_id == project_id)
            .order_by(t.operations.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(t.operations.c.status == status.value)
        if action is not None:
            query = query.where(t.operations.c.action_name == action)
        if created_by is not None:
            query = query.where(t.operations.c.created_by == created_by)
        if before is not None:
            query = query.where(t.operations.c.id < before)
        with self.read() as conn:
            return [rows.operation(r) for r in conn.execute(query).all()]

    def _check_operation(self, conn: Connection, project_id: str, operation_id: str) -> None:
        found = conn.execute(
            select(t.operations.c.id).where(
                t.operations.c.id == operation_id, t.operations.c.project_id == project_id
            )
        ).first()
        if found is None:
            raise NotFound(f"no operation {operation_id}", id=operation_id)

    def list_tasks(
        self, project_id: str, operation_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[Task]:
        """Up to `limit` tasks of one operation, oldest first, newer than the id `after`.

        NotFound for an operation of another project (or none).
        """
        query = (
            select(t.tasks)
            .where(t.tasks.c.operation_id == operation_id)
            .order_by(t.tasks.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.tasks.c.id > after)
        with self.read() as conn:
            self._check_operation(conn, project_id, operation_id)
            return [rows.task(r) for r in conn.execute(query).all()]

    def list_session_actions(
        self, project_id: str, operation_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[SessionAction]:
        """Up to `limit` attempts of an operation's work, oldest first, newer than the id `after`.

        One range of `ix_session_actions_operation_id`. Records come without their
        status history (`get_session_action` has it). NotFound for an operation of
        another project (or none).
        """
        sa = t.session_actions.c
        query = (
            select(t.session_actions)
            .where(sa.operation_id == operation_id)
            .order_by(sa.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(sa.id > after)
        with self.read() as conn:
            self._check_operation(conn, project_id, operation_id)
            return [rows.session_action(r) for r in conn.execute(query).all()]

    def find_session_actions(
        self,
        project_id: str,
        *,
        operation_id: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[SessionAction]:
        """Session actions of a project matching every filter given, oldest first, after `after`.

        Ids sort by creation, so the order is each session's sequence. Callers give
        at least one filter: each is served by the index leading with its column
        (`ix_session_actions_operation_id`, `_session`, `_task`), never a scan of the
        project's session actions. Another project's ids match nothing. Records come
        without their status history (`get_session_action` has it).
        """
        sa = t.session_actions.c
        query = (
            select(t.session_actions)
            .where(sa.project_id == project_id)
            .order_by(sa.id)
            .limit(limit)
        )
        for column, value in (
            (sa.operation_id, operation_id),
            (sa.session_id, session_id),
            (sa.task_id, task_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(sa.id > after)
        with self.read() as conn:
            return [rows.session_action(r) for r in conn.execute(query).all()]

    def get_session_action(self, project_id: str, session_action_id: str) -> SessionAction:
        """One session action with its status history."""
        with self.read() as conn:
            row = conn.execute(
                select(t.session_actions).where(
                    t.session_actions.c.id == session_action_id,
                    t.session_actions.c.project_id == project_id,
                )
            ).first()
            if row is None:
                raise NotFound(f"no session action {session_action_id}", id=session_action_id)
            return rows.session_action(row, self._history(conn, session_action_id))

    def list_logs(
        self, project_id: str, operation_id: str, after: int, limit: int
    ) -> list[LogRecord]:
        """Log records of an operation after sequence number `after`."""
        with self.read() as conn:
            self._check_operation(conn, project_id, operation_id)
            found = conn.execute(
                select(t.logs)
                .where(t.logs.c.operation_id == operation_id, t.logs.c.seq > after)
                .order_by(t.logs.c.seq)
                .limit(limit)
            ).all()
        return [
            LogRecord(
                seq=r.seq,
                operation_id=r.operation_id,
                session_action_id=r.session_action_id,
                at=at(r.at),
                stream=r.stream,
                line=r.line,
            )
            for r in found
        ]

    def list_events(self, project_id: str, after: int, limit: int) -> list[Event]:
        """Events of a project after sequence number `after`, oldest first."""
        with self.read() as conn:
            found = conn.execute(
                select(t.events)
                .where(t.events.c.project_id == project_id, t.events.c.seq > after)
                .order_by(t.events.c.seq)
                .limit(limit)
            ).all()
        return [
            Event(
                id=r.seq,
                project_id=r.project_id,
                type=r.type,
                entity_id=r.entity_id,
                at=at(r.at),
                data=r.data,
            )
            for r in found
        ]

    def last_event_id(self, project_id: str) -> int:
        """The newest event's id in a project (0 when none)."""
        with self.read() as conn:
            found = conn.execute(
                select(t.events.c.seq)
                .where(t.events.c.project_id == project_id)
                .order_by(t.events.c.seq.desc())
                .limit(1)
            ).scalar()
        return int(found or 0)

    def _ended_by_minute(
        self, conn: Connection, project_id: str, ids: list[str], now: float
    ) -> tuple[dict[str, dict[str, int]], dict[str, list[int]]]:
        """Tasks of queues `ids` ended in the hour before `now`: by status, and by minute.

        The final ends come from this process's `FinalEnds`; the last `SEALED_AFTER`
        seconds (and any end after `now`, counted in the last minute) from the index.
        """
        tasks = t.tasks.c
        ended: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        buckets: dict[str, list[int]] = {qid: [0] * THROUGHPUT_MINUTES for qid in ids}
        for qid, final in self._final_ends.count(conn, project_id, ids, now).items():
            for status, n in final.by_status.items():
                ended[qid][status] += n
            buckets[qid] = final.buckets
        start = now - WINDOW
        offset = (tasks.updated_at - start) / 60
        # Both are >= 0 here, where truncating is flooring; SQLite may lack floor().
        minute = cast(offset, Integer) if conn.dialect.name == "sqlite" else func.floor(offset)
        bucket = minute.label("bucket")
        for qid, status, index, n in conn.execute(
            select(tasks.queue_id, tasks.status, bucket, func.count())
            .where(tasks.queue_id.in_(ids), t.TASK_ENDED, tasks.updated_at >= now - SEALED_AFTER)
            .group_by(tasks.queue_id, tasks.status, bucket)
        ).all():
            ended[qid][status] += int(n)
            buckets[qid][min(int(index), THROUGHPUT_MINUTES - 1)] += int(n)
        return ended, buckets

    def queue_stats(
        self, project_id: str, after: tuple[int, str] | None = None, limit: int | None = None
    ) -> list[QueueStats]:
        """Queues of a project with their depth, running work and last hour's throughput.

        Highest priority first, then by name: the `limit` queues after position `after`
        (a queue's `(priority, name)`), every queue when both are None.

        Counts come from the partial indexes `ix_tasks_queue_active_available` (unfinished tasks)
        and `ix_tasks_queue_ended` (finished tasks by end time), grouped in the database:
        never a scan of the operations or tasks tables. Bucket `i` of the throughput
        counts the tasks that ended in `[now - 3600 + 60 i, now - 3600 + 60 (i + 1))`:
        the ends older than `SEALED_AFTER` seconds are final, and kept by this process
        (`oprun.store.throughput`), so each call reads only the ends since its last.
        """
        tasks = t.tasks.c
        with self.read() as conn:
            now = self._db_now(conn)
            col = t.queues.c
            query = select(t.queues).where(col.project_id == project_id)
            if after is not None:
                priority, name = after
                query = query.where(
                    or_(col.priority < priority, and_(col.priority == priority, col.name > name))
                )
            query = query.order_by(col.priority.desc(), col.name)
            if limit is not None:
                query = query.limit(limit)
            queues = conn.execute(query).all()
            ids = [q.id for q in queues]
            live: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            ended: dict[str, dict[str, int]] = {}
            buckets: dict[str, list[int]] = {}
            if ids:
                for qid, status, n in conn.execute(
                    select(tasks.queue_id, tasks.status, func.count())
                    .where(tasks.queue_id.in_(ids), t.TASK_ACTIVE)
                    .group_by(tasks.queue_id, tasks.status)
                ).all():
                    live[qid][status] = int(n)
                ended, buckets = self._ended_by_minute(conn, project_id, ids, now)
        running = (OperationStatus.SCHEDULED, OperationStatus.RUNNING, OperationStatus.CANCELING)
        return [
            QueueStats(
                name=q.name,
                priority=q.priority,
                max_concurrency=q.max_concurrency,
                depth=live[q.id][OperationStatus.QUEUED.value],
                running=sum(live[q.id][s.value] for s in running),
                succeeded=ended[q.id][OperationStatus.SUCCEEDED.value],
                failed=ended[q.id][OperationStatus.FAILED.value],
                throughput=buckets[q.id],
                at=at(now),
            )
            for q in queues
        ]
