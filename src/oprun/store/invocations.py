"""Queries that create and end operations: invoke, cancel, delete."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from oprun.domain.errors import Conflict, NotFound
from oprun.domain.ids import new_id
from oprun.domain.models import ActionDefinition, Operation
from oprun.domain.plan import StepPlan, dependencies, single_step
from oprun.domain.policy import operation_policy, requirements_of
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.store import rows
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.batch import insert_rows
from oprun.store.creation_pg import (
    CHUNK,
    CREATED_EVENT,
    LostQueue,
    PipelinedCreation,
    create_in_one_statement,
)
from oprun.store.notify import events_key, operation_key, work_key, worker_key
from oprun.store.protocol import NewOperation
from oprun.store.schema import WAITING_ON_STEPS
from oprun.store.tenancy import ensure_queue
from oprun.store.transitions import LIVE_SA, move_sa, move_task, settle


@dataclass(frozen=True)
class CheckedOperation(NewOperation):
    """A `NewOperation` made from the version its caller took as the action's latest.

    With `latest`, it is written only if `action` is still its action's latest
    version in the writing transaction (`StaleAction` otherwise): the caller may
    have resolved the latest version from a cache.
    """

    latest: bool = False


class StaleAction(Exception):
    """An operation was asked of an action's latest version, and a newer one exists now."""

    def __init__(self, names: Sequence[tuple[str, str]]) -> None:
        super().__init__(f"a newer version of {', '.join(n for _, n in names)} was saved")
        self.names = list(names)
        """(project_id, action name) of each action whose latest version moved on."""


_QUEUE_CACHE_LOCK = threading.Lock()
MAX_CACHED_QUEUES = 10_000
"""Queue ids a store keeps before it starts over (a bound: a miss reads the row)."""


def _check_latest(conn: Connection, latest: dict[str, tuple[int, str, str]]) -> None:
    """Raise `StaleAction` unless each action's latest version is the one given.

    `latest`: (version, project id, name) by action id. A plain read: a version saved
    after it and before the commit is not waited for, as when the caller looked the
    version up in a transaction of its own.
    """
    found = conn.execute(
        select(t.actions.c.id, t.actions.c.latest_version).where(t.actions.c.id.in_(list(latest)))
    ).all()
    now_latest = {row.id: row.latest_version for row in found}
    stale = [(p, n) for aid, (v, p, n) in latest.items() if now_latest.get(aid) != v]
    if stale:
        raise StaleAction(stale)


def _keys(op_rows: Sequence[dict[str, Any]]) -> set[str]:
    """What new operations change: their projects' work and events."""
    projects = {op["project_id"] for op in op_rows}
    return {k for p in projects for k in (work_key(p), events_key(p))}


def _check_parents(
    conn: Connection, op_rows: Sequence[dict[str, Any]], names: dict[str, tuple[str, str]]
) -> None:
    """Raise `LostQueue` or `StaleAction` unless the queues and versions of `op_rows` are there.

    `operations` has no foreign keys to them (migration 0012): PostgreSQL's statement
    checks each kind of operation once (`creation_pg`), and so does this, on SQLite.
    `names`: (project id, name) by action id.
    """
    kinds = {
        (op["project_id"], op["action_id"], op["action_version_id"], op["queue_id"])
        for op in op_rows
    }
    queues = {
        (row.id, row.project_id)
        for row in conn.execute(
            select(t.queues.c.id, t.queues.c.project_id).where(
                t.queues.c.id.in_({k[3] for k in kinds})
            )
        )
    }
    lost = sorted({qid for pid, _, _, qid in kinds if (qid, pid) not in queues})
    if lost:
        raise LostQueue(lost)
    versions = {
        (vid, aid, pid)
        for vid, aid, pid in conn.execute(
            select(t.action_versions.c.id, t.actions.c.id, t.actions.c.project_id)
            .join(t.actions, t.actions.c.id == t.action_versions.c.action_id)
            .where(t.action_versions.c.id.in_({k[2] for k in kinds}))
        )
    }
    stale = {aid for pid, aid, vid, _ in kinds if (vid, aid, pid) not in versions}
    if stale:
        raise StaleAction([names[aid] for aid in sorted(stale)])


def _policies(definition: ActionDefinition) -> dict[str, Any]:
    """The columns an operation copies from its action's policies."""
    return {"policy": operation_policy(definition), "requirements": requirements_of(definition)}


UNSET_AT_CREATION = dict.fromkeys(
    (
        "step_code",
        "progress_percent",
        "progress_message",
        "result",
        "error",
        "exit_reason",
        "worker_id",
        "started_at",
        "ended_at",
    )
)
"""Nullable columns of `operations` a new operation leaves NULL: its row omits them."""

VARIES_BY_OPERATION = ("id", "parameters", "idempotency_key", "timeout")
"""Fields of a new `Operation` not fixed by `_template_key` (see `_created`)."""


def _template_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What fixes every field of a new operation's record but `VARIES_BY_OPERATION`."""
    return (
        row["project_id"],
        row["action_version_id"],
        row["queue_name"],
        row["created_by"],
        row["source_type"],
        row["source_id"],
        row["n_queued"],
        row["max_attempts"],
        row["created_at"],
    )


def _created(templates: dict[tuple[Any, ...], Operation], row: dict[str, Any]) -> Operation:
    """The record of a new operation's row (`_operation_row`).

    The first of a kind is built from the row; the others copy it with their own
    `VARIES_BY_OPERATION` (a bulk request's records cost a copy each, not a validation).
    """
    key = _template_key(row)
    template = templates.get(key)
    if template is None:
        template = templates[key] = rows.operation(SimpleNamespace(**UNSET_AT_CREATION, **row))
        return template
    update = {name: row[name] for name in VARIES_BY_OPERATION}
    return template.model_copy(update={**update, "history": []})


def _operation_row(
    tx: Tx,
    item: NewOperation,
    queue_id: str,
    plan: Sequence[StepPlan],
    policies: dict[str, Any],
) -> dict[str, Any]:
    action = item.action
    definition = action.definition
    return {
        "id": new_id("operation"),
        "project_id": item.project_id,
        "action_id": action.id,
        "action_version_id": action.version_id,
        "action_name": action.name,
        "action_version": action.version,
        "action_digest": action.digest,
        "queue_id": queue_id,
        "queue_name": item.queue,
        "status": OS.QUEUED.value,
        "n_queued": sum(len(step.tasks) for step in plan),
        "n_running": 0,
        "n_succeeded": 0,
        "n_failed": 0,
        "n_canceled": 0,
        "parameters": item.parameters,
        "params_digest": item.params_digest,
        "created_by": item.created_by,
        "source_type": item.source_type.value,
        "source_id": item.source_id,
        "idempotency_key": item.idempotency_key,
        "timeout": item.timeout,
        "deadline_at": tx.now + item.timeout if item.timeout else None,
        "attempts": 0,
        "max_attempts": definition.max_attempts,
        "log_bytes": 0,
        "steps": dependencies(plan),
        **policies,
        "created_at": tx.now,
        "updated_at": tx.now,
    }


def _task_rows(
    tx: Tx, op: dict[str, Any], definition: ActionDefinition, plan: Sequence[StepPlan]
) -> list[dict[str, Any]]:
    found = []
    for step in plan:
        available_at = WAITING_ON_STEPS if step.depends_on else tx.now
        for parameters in step.tasks:
            found.append(
                {
                    "id": new_id("task"),
                    "operation_id": op["id"],
                    "project_id": op["project_id"],
                    "queue_id": op["queue_id"],
                    "step_id": step.name,
                    "status": OS.QUEUED.value,
                    "priority": 0,
                    "parameters": parameters,
                    "attempts": 0,
                    "max_attempts": definition.max_attempts,
                    "available_at": available_at,
                    "created_at": tx.now,
                    "updated_at": tx.now,
                }
            )
    return found


@dataclass
class _NewRows:
    """The rows of one request's new operations and tasks, made item by item."""

    tx: Tx
    existing: dict[tuple[str, str], Operation]
    """Operations by (project id, idempotency key): found, or made earlier in the request."""
    queue_ids: dict[tuple[str, str], str]
    """Queue ids by (project id, name): the cached ones, then those looked up or made."""
    new_queues: dict[tuple[str, str], str] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    """(version, project id, name) by action id, of the operations of a latest version."""
    names: dict[str, tuple[str, str]] = field(default_factory=dict)
    """(project id, name) by action id."""
    templates: dict[tuple[Any, ...], Operation] = field(default_factory=dict)
    op_rows: list[dict[str, Any]] = field(default_factory=list)
    task_rows: list[dict[str, Any]] = field(default_factory=list)
    sent: tuple[int, int] = (0, 0)
    """How many operation and task rows `take_unsent` has handed out."""

    def add(self, item: NewOperation) -> tuple[Operation, bool]:
        """The item's rows appended, or the operation its idempotency key found."""
        tx = self.tx
        key = (item.project_id, item.idempotency_key or "")
        if item.idempotency_key and key in self.existing:
            return self.existing[key], False
        if isinstance(item, CheckedOperation) and item.latest:
            action = item.action
            self.latest[action.id] = (action.version, item.project_id, action.name)
        self.names[item.action.id] = (item.project_id, item.action.name)
        qid = self.queue_id(item)
        plan = item.plan or single_step(item.parameters)
        vid = item.action.version_id
        if vid not in self.policies:  # the same for all of a version's operations
            self.policies[vid] = _policies(item.action.definition)
        new = _operation_row(tx, item, qid, plan, self.policies[vid])
        self.op_rows.append(new)
        self.task_rows.extend(_task_rows(tx, new, item.action.definition, plan))
        written = _created(self.templates, new)
        if item.idempotency_key:
            self.existing[key] = written
        return written, True

    def queue_id(self, item: NewOperation) -> str:
        """The id of the item's queue, made in this transaction if it is new."""
        qkey = (item.project_id, item.queue)
        qid = self.queue_ids.get(qkey)
        if qid is None:
            qid = self.queue_ids[qkey] = self.new_queues[qkey] = ensure_queue(
                self.tx, item.project_id, item.queue
            )
        return qid

    def resolve_queues(self, items: Sequence[NewOperation]) -> None:
        """The queues of the items that will be written, looked up or made now.

        An item answered by its idempotency key (found, or met earlier in `items`) is
        skipped: its queue may never be used.
        """
        keys = set(self.existing)
        for item in items:
            if item.idempotency_key:
                key = (item.project_id, item.idempotency_key)
                if key in keys:
                    continue
                keys.add(key)
            self.queue_id(item)

    def unsent(self) -> int:
        """Operations made since the last `take_unsent`."""
        return len(self.op_rows) - self.sent[0]

    def take_unsent(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The operation and task rows made since the last call."""
        ops, tasks = self.sent
        self.sent = (len(self.op_rows), len(self.task_rows))
        return self.op_rows[ops:], self.task_rows[tasks:]

    def versions(self) -> dict[str, int]:
        """The version each action id must still have as its latest."""
        return {aid: v for aid, (v, _, _) in self.latest.items()}


class InvocationQueries(StoreBase):
    """Operations from invocation to deletion."""

    # -- invoke --------------------------------------------------------------------------
    def create_operations(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        """Write operations and their tasks, all in one transaction.

        An item whose idempotency key is already used in its project yields the
        existing operation; the flag says whether each operation was created. A
        `CheckedOperation` asked of a version that is no longer its action's latest
        raises `StaleAction` and writes nothing.
        """
        try:
            return self._create_operations(items)
        except (IntegrityError, LostQueue):
            # A concurrent request took one of the keys between our check and insert
            # (the retry finds its operation), or a cached queue id no longer names a
            # row (a database restored under a running server): the retry reads again.
            self._queue_id_cache().clear()
            return self._create_operations(items)

    def _queue_id_cache(self) -> dict[tuple[str, str], str]:
        """Queue ids by (project id, name), as committed: a queue is never deleted or renamed."""
        cache: dict[tuple[str, str], str] | None = self.__dict__.get("_queue_ids")
        if cache is None:
            with _QUEUE_CACHE_LOCK:
                cache = self.__dict__.setdefault("_queue_ids", {})
        return cache

    def _create_operations(self, items: Sequence[NewOperation]) -> list[tuple[Operation, bool]]:
        known_queues = self._queue_id_cache()
        # With no idempotency key to look up and every queue known, PostgreSQL's one
        # statement is the whole write (`create_in_one_statement`); a large request's
        # is sent a chunk at a time, each while the next is built (`PipelinedCreation`),
        # its new queues made first.
        known = {(i.project_id, i.queue): known_queues.get((i.project_id, i.queue)) for i in items}
        postgres = self.dialect_name == "postgresql"
        pipelined = postgres and len(items) > CHUNK
        single = (
            postgres
            and not pipelined
            and all(
                not item.idempotency_key and known[(item.project_id, item.queue)] for item in items
            )
        )
        with self.write_one() if single else self.write() as tx:
            conn = tx.conn
            keys_by_project: dict[str, set[str]] = defaultdict(set)
            for item in items:
                if item.idempotency_key:
                    keys_by_project[item.project_id].add(item.idempotency_key)
            existing: dict[tuple[str, str], Operation] = {}
            for project_id, keys in keys_by_project.items():
                for row in conn.execute(
                    select(t.operations).where(
                        t.operations.c.project_id == project_id,
                        t.operations.c.idempotency_key.in_(keys),
                    )
                ):
                    existing[(project_id, row.idempotency_key)] = rows.operation(row)
            batch = _NewRows(tx, existing, {k: v for k, v in known.items() if v})
            results: list[tuple[Operation, bool]] = []
            if pipelined:  # a new queue is made through SQLAlchemy, which waits: not in it
                batch.resolve_queues(items)
            pipe = PipelinedCreation(conn, tx.now, self.calls) if pipelined else None
            with pipe if pipe is not None else nullcontext():
                for item in items:
                    results.append(batch.add(item))
                    if pipe is not None and batch.unsent() == CHUNK:
                        self._send(pipe, batch)
                if pipe is not None and batch.unsent():
                    self._send(pipe, batch)
            op_rows, task_rows, names = batch.op_rows, batch.task_rows, batch.names
            if postgres and (pipe is not None or op_rows):
                stale = (
                    pipe.stale()
                    if pipe is not None
                    else create_in_one_statement(
                        conn, tx.now, op_rows, task_rows, self._wired(op_rows), batch.versions()
                    )
                )
                tx.notified |= _keys(op_rows)
                if stale:
                    raise StaleAction([names[aid] for aid in stale])
            elif op_rows:
                for op in op_rows:
                    tx.history(op["id"], OS.QUEUED.value, "created")
                    tx.event(op["project_id"], "operation.created", op["id"], CREATED_EVENT)
                    tx.keys.add(work_key(op["project_id"]))
                if batch.latest:
                    _check_latest(conn, batch.latest)
                _check_parents(conn, op_rows, names)
                insert_rows(conn, t.operations, op_rows)
                insert_rows(conn, t.tasks, task_rows)
        if batch.new_queues:  # only once committed: a rolled-back queue row never existed
            if len(known_queues) + len(batch.new_queues) > MAX_CACHED_QUEUES:
                known_queues.clear()
            known_queues.update(batch.new_queues)
        return results

    def _send(self, pipe: PipelinedCreation, batch: _NewRows) -> None:
        """Send the rows `batch` made since the last chunk."""
        ops, tasks = batch.take_unsent()
        pipe.send(ops, tasks, self._wired(ops), batch.versions())

    def _wired(self, op_rows: Sequence[dict[str, Any]]) -> list[str]:
        """The NOTIFY keys of new operations, as the listener is told them."""
        return [self.notifier.wire(k) for k in sorted(_keys(op_rows))]

    def find_cached_success(self, action_version_id: str, params_digest: str) -> str | None:
        """The id of a SUCCEEDED operation of this version with these parameters."""
        with self.read() as conn:
            return conn.execute(
                select(t.operations.c.id)
                .where(
                    t.operations.c.action_version_id == action_version_id,
                    t.operations.c.params_digest == params_digest,
                    t.operations.c.status == OS.SUCCEEDED.value,
                )
                .limit(1)
            ).scalar()

    # -- cancel, delete ------------------------------------------------------------------
    def cancel_operation(self, project_id: str, operation_id: str, detail: str) -> None:
        """Cancel an operation: waiting tasks at once, running ones via their workers."""
        with self.write() as tx:
            cancel_in(tx, project_id, operation_id, detail)

    def delete_operation(self, project_id: str, operation_id: str) -> None:
        """Delete a finished operation and everything recorded about it."""
        with self.write() as tx:
            conn = tx.conn
            status = conn.execute(
                select(t.operations.c.status).where(
                    t.operations.c.id == operation_id, t.operations.c.project_id == project_id
                )
            ).scalar()
            if status is None:
                raise NotFound(f"no operation {operation_id}", id=operation_id)
            if not OS(status).is_terminal():
                raise Conflict(
                    f"operation {operation_id} is {status}; cancel it before deleting it",
                    status=status,
                )
            entity_ids = [operation_id]
            entity_ids += (
                conn.execute(select(t.tasks.c.id).where(t.tasks.c.operation_id == operation_id))
                .scalars()
                .all()
            )
            entity_ids += (
                conn.execute(
                    select(t.session_actions.c.id).where(
                        t.session_actions.c.operation_id == operation_id
                    )
                )
                .scalars()
                .all()
            )
            conn.execute(
                delete(t.status_history).where(t.status_history.c.entity_id.in_(entity_ids))
            )
            conn.execute(delete(t.logs).where(t.logs.c.operation_id == operation_id))
            conn.execute(
                delete(t.session_actions).where(t.session_actions.c.operation_id == operation_id)
            )
            conn.execute(delete(t.sessions).where(t.sessions.c.operation_id == operation_id))
            conn.execute(delete(t.tasks).where(t.tasks.c.operation_id == operation_id))
            conn.execute(delete(t.operations).where(t.operations.c.id == operation_id))
            tx.event(project_id, "operation.deleted", operation_id, {})
            tx.keys.add(operation_key(operation_id))


def cancel_in(
    tx: Tx,
    project_id: str,
    operation_id: str,
    detail: str,
    *,
    reason: str = "CANCELED",
    error: dict[str, Any] | None = None,
) -> None:
    """Cancel inside `tx`; `reason` TIMEOUT makes the operation end FAILED, not CANCELED."""
    conn = tx.conn
    op = conn.execute(
        select(t.operations.c.status)
        .where(t.operations.c.id == operation_id, t.operations.c.project_id == project_id)
        .with_for_update()
    ).first()
    if op is None:
        raise NotFound(f"no operation {operation_id}", id=operation_id)
    status = OS(op.status)
    if status is OS.CANCELING:
        return
    if status.is_terminal():
        raise Conflict(f"operation {operation_id} is already {status.value}", status=status.value)
    conn.execute(
        update(t.operations)
        .where(t.operations.c.id == operation_id, t.operations.c.status == status.value)
        .values(status=OS.CANCELING.value, updated_at=tx.now)
    )
    tx.history(operation_id, OS.CANCELING.value, detail)
    tx.event(project_id, "operation.status", operation_id, {"status": "CANCELING"})
    tasks = conn.execute(
        select(t.tasks.c.id, t.tasks.c.status).where(t.tasks.c.operation_id == operation_id)
    ).all()
    for task in tasks:
        if task.status == OS.QUEUED.value:
            move_task(tx, task.id, operation_id, OS.CANCELED, detail)
        elif not OS(task.status).is_terminal():
            move_task(tx, task.id, operation_id, OS.CANCELING, detail)
    for sa in conn.execute(
        select(
            t.session_actions.c.id,
            t.session_actions.c.status,
            t.session_actions.c.worker_id,
        )
        .where(
            t.session_actions.c.operation_id == operation_id,
            t.session_actions.c.status.in_(LIVE_SA),
            t.session_actions.c.task_id.isnot(None),
        )
        .order_by(t.session_actions.c.id)
    ).all():
        if sa.status == SAS.RUNNING.value:
            move_sa(tx, dict(sa._mapping), SAS.CANCELING, detail)
        tx.keys.add(worker_key(sa.worker_id))
    values: dict[str, Any] = {"exit_reason": reason}
    if error is not None:
        values["error"] = error
    conn.execute(
        update(t.operations)
        .where(t.operations.c.id == operation_id, t.operations.c.exit_reason.is_(None))
        .values(**values)
    )
    settle(tx, [operation_id])
