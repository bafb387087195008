"""Queries on the slow-changing records: projects, tokens, queues, actions, workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update

from oprun.domain.audit import AuditEntry
from oprun.domain.errors import NotFound
from oprun.domain.ids import new_id
from oprun.domain.models import Action, ActionDefinition, Project, Queue, Worker
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx, at, insert_new, to_datetime
from oprun.store.notify import work_key

ActionGuard = Callable[[ActionDefinition | None, ActionDefinition], None]
"""Checks a new action version against the latest (None: a new action); raises to refuse."""


def _project(row: Any) -> Project:
    return Project(id=row.id, name=row.name, created_at=at(row.created_at))


def _worker(row: Any) -> Worker:
    return Worker(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        hostname=row.hostname,
        status=WorkerStatus(row.status),
        queues=row.queues,
        capabilities=row.capabilities,
        last_heartbeat_at=to_datetime(row.last_heartbeat_at),
        created_at=at(row.created_at),
    )


_ACTION_COLUMNS = (
    t.actions.c.id,
    t.actions.c.project_id,
    t.actions.c.name,
    t.actions.c.latest_version,
    t.action_versions.c.id.label("version_id"),
    t.action_versions.c.version,
    t.action_versions.c.digest,
    t.action_versions.c.definition,
    t.action_versions.c.created_at,
)


def _action(row: Any) -> Action:
    return Action(
        id=row.id,
        version_id=row.version_id,
        project_id=row.project_id,
        name=row.name,
        version=row.version,
        latest_version=row.latest_version,
        digest=row.digest,
        definition=ActionDefinition.model_validate(row.definition),
        created_at=at(row.created_at),
    )


def _actions_join() -> Any:
    return t.actions.join(t.action_versions, t.action_versions.c.action_id == t.actions.c.id)


def ensure_queue(tx: Tx, project_id: str, name: str) -> str:
    """The id of the project's queue `name`, created (priority 0, no limit) if new."""
    by_name = select(t.queues.c.id).where(
        t.queues.c.project_id == project_id, t.queues.c.name == name
    )
    qid = tx.conn.execute(by_name).scalar()
    if qid is not None:
        return str(qid)
    qid = new_id("queue")
    values = {
        "id": qid,
        "project_id": project_id,
        "name": name,
        "priority": 0,
        "created_at": tx.now,
    }
    if insert_new(tx.conn, t.queues, values, t.queues.c.project_id, t.queues.c.name):
        return qid
    return str(tx.conn.execute(by_name).scalar_one())  # a concurrent request created it first


class TenancyQueries(StoreBase):
    """Projects, queues, actions and workers (tokens: `store/tokens.py`)."""

    # -- projects -----------------------------------------------------------
    def create_project(self, name: str, *, audit: AuditEntry | None = None) -> Project:
        """Create a project with its `default` queue (recording `audit` about it)."""
        with self.write() as tx:
            pid = new_id("project")
            tx.conn.execute(insert(t.projects).values(id=pid, name=name, created_at=tx.now))
            ensure_queue(tx, pid, "default")
            if audit is not None:
                tx.audit(audit.about(pid, audit.project_id or pid, name=name))
            return Project(id=pid, name=name, created_at=at(tx.now))

    def get_project(self, project_id: str) -> Project:
        """One project, or NotFound."""
        with self.read() as conn:
            row = conn.execute(select(t.projects).where(t.projects.c.id == project_id)).first()
        if row is None:
            raise NotFound(f"no project {project_id}", id=project_id)
        return _project(row)

    def first_project(self) -> Project:
        """The oldest project (the one `oprun up` bootstrapped)."""
        with self.read() as conn:
            row = conn.execute(select(t.projects).order_by(t.projects.c.id).limit(1)).first()
        if row is None:
            raise NotFound("no project yet")
        return _project(row)

    # -- queues ------------------------------------------------------------------------
    def configure_queue(
        self,
        project_id: str,
        name: str,
        priority: int,
        max_concurrency: int | None,
        *,
        audit: AuditEntry | None = None,
    ) -> Queue:
        """Set a queue's priority and concurrency limit (the queue is created if new).

        With `audit`, the row (with the settings before and after) is written with it.
        """
        with self.write() as tx:
            qid = ensure_queue(tx, project_id, name)
            before = tx.conn.execute(
                select(t.queues.c.priority, t.queues.c.max_concurrency)
                .where(t.queues.c.id == qid)
                .with_for_update()
            ).one()
            tx.conn.execute(
                update(t.queues)
                .where(t.queues.c.id == qid)
                .values(priority=priority, max_concurrency=max_concurrency)
            )
            tx.keys.add(work_key(project_id))  # more room or a new order: claims look again
            tx.audit(
                None
                if audit is None
                else audit.about(
                    name,
                    priority=priority,
                    max_concurrency=max_concurrency,
                    previous={"priority": before[0], "max_concurrency": before[1]},
                )
            )
            row = tx.conn.execute(select(t.queues).where(t.queues.c.id == qid)).one()
            return Queue(
                id=row.id,
                project_id=row.project_id,
                name=row.name,
                priority=row.priority,
                max_concurrency=row.max_concurrency,
                created_at=at(row.created_at),
            )

    # -- actions -----------------------------------------------------------------------
    def save_action(
        self,
        project_id: str,
        definition: ActionDefinition,
        guard: ActionGuard | None = None,
        actor: str | None = None,
        *,
        audit: AuditEntry | None = None,
    ) -> tuple[Action, bool]:
        """Save a new version of an action unless one with the same digest exists.

        `guard(latest, definition)` runs under the action's row lock before a new version
        is written (latest is None for a new action) and may raise to refuse it; the
        `action.saved` event records `actor`, the digest and the one it replaces, and so
        does the audit row `audit` (written only for a new version).
        Returns the version and whether it was created.
        """
        digest = definition.digest()
        with self.write() as tx:
            conn = tx.conn
            ensure_queue(tx, project_id, definition.queue)
            by_name = (
                select(t.actions)
                .where(t.actions.c.project_id == project_id, t.actions.c.name == definition.name)
                .with_for_update()
            )
            action = conn.execute(by_name).first()
            if action is None:
                # Version 0 until this transaction adds version 1; a concurrent save of
                # the same new action creates it first, and this one then reads it.
                insert_new(
                    conn,
                    t.actions,
                    {
                        "id": new_id("action"),
                        "project_id": project_id,
                        "name": definition.name,
                        "latest_version": 0,
                        "created_at": tx.now,
                    },
                    t.actions.c.project_id,
                    t.actions.c.name,
                )
                action = conn.execute(by_name).one()
            action_id, version = action.id, action.latest_version + 1
            existing = conn.execute(
                select(*_ACTION_COLUMNS)
                .select_from(_actions_join())
                .where(t.actions.c.id == action_id, t.action_versions.c.digest == digest)
            ).first()
            if existing is not None:
                return _action(existing), False
            latest = None
            if action.latest_version:
                latest = conn.execute(
                    select(*_ACTION_COLUMNS)
                    .select_from(_actions_join())
                    .where(
                        t.actions.c.id == action_id,
                        t.action_versions.c.version == action.latest_version,
                    )
                ).one()
            if guard is not None:
                guard(None if latest is None else _action(latest).definition, definition)
            conn.execute(
                update(t.actions).where(t.actions.c.id == action_id).values(latest_version=version)
            )
            conn.execute(
                insert(t.action_versions).values(
                    id=new_id("action_version"),
                    action_id=action_id,
                    version=version,
                    digest=digest,
                    definition=definition.model_dump(mode="json"),
                    created_at=tx.now,
                )
            )
            row = conn.execute(
                select(*_ACTION_COLUMNS)
                .select_from(_actions_join())
                .where(t.actions.c.id == action_id, t.action_versions.c.version == version)
            ).one()
            saved = {
                "name": definition.name,
                "version": version,
                "digest": digest,
                "previous_digest": None if latest is None else latest.digest,
            }
            tx.event(project_id, "action.saved", action_id, {**saved, "by": actor})
            if audit is not None:
                tx.audit(audit.about(definition.name, **saved))
            return _action(row), True

    def get_action(self, project_id: str, name: str, version: int | None = None) -> Action:
        """The given (default latest) version of an action, or NotFound."""
        with self.read() as conn:
            return self._get_action(conn, project_id, name, version)

    def _get_action(
        self, conn: Connection, project_id: str, name: str, version: int | None
    ) -> Action:
        wanted = t.actions.c.latest_version if version is None else version
        row = conn.execute(
            select(*_ACTION_COLUMNS)
            .select_from(_actions_join())
            .where(
                t.actions.c.project_id == project_id,
                t.actions.c.name == name,
                t.action_versions.c.version == wanted,
            )
        ).first()
        if row is None:
            what = f"no action {name!r}" if version is None else f"no version {version} of {name!r}"
            raise NotFound(what, action=name, version=version)
        return _action(row)

    def list_actions(self, project_id: str, after: str | None, limit: int) -> list[Action]:
        """Latest version of each action, by name, after the name `after`."""
        query = (
            select(*_ACTION_COLUMNS)
            .select_from(_actions_join())
            .where(
                t.actions.c.project_id == project_id,
                t.action_versions.c.version == t.actions.c.latest_version,
            )
            .order_by(t.actions.c.name)
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.actions.c.name > after)
        with self.read() as conn:
            return [_action(r) for r in conn.execute(query).all()]

    def list_action_versions(
        self, project_id: str, name: str, after: int | None, limit: int
    ) -> list[Action]:
        """Every version of one action, newest first."""
        query = (
            select(*_ACTION_COLUMNS)
            .select_from(_actions_join())
            .where(t.actions.c.project_id == project_id, t.actions.c.name == name)
            .order_by(t.action_versions.c.version.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.action_versions.c.version < after)
        with self.read() as conn:
            rows = conn.execute(query).all()
            if not rows and after is None:
                self._get_action(conn, project_id, name, None)  # raises NotFound
        return [_action(r) for r in rows]

    # -- workers -----------------------------------------------------------------------
    def register_worker(
        self,
        project_id: str,
        name: str,
        hostname: str,
        queues: Sequence[str],
        capabilities: dict[str, Any],
    ) -> Worker:
        """Register a new worker (a restarted agent registers afresh)."""
        with self.write() as tx:
            for queue in queues:
                ensure_queue(tx, project_id, queue)
            wid = new_id("worker")
            tx.conn.execute(
                insert(t.workers).values(
                    id=wid,
                    project_id=project_id,
                    name=name,
                    hostname=hostname,
                    status=WorkerStatus.IDLE.value,
                    queues=list(queues),
                    capabilities=capabilities,
                    last_heartbeat_at=tx.now,
                    created_at=tx.now,
                )
            )
            tx.history(wid, WorkerStatus.IDLE.value, "registered")
            tx.event(project_id, "worker.registered", wid, {"name": name})
            row = tx.conn.execute(select(t.workers).where(t.workers.c.id == wid)).one()
            return _worker(row)

    def get_worker(self, project_id: str, worker_id: str) -> Worker:
        """One worker of the project, or NotFound."""
        with self.read() as conn:
            row = conn.execute(
                select(t.workers).where(
                    t.workers.c.id == worker_id, t.workers.c.project_id == project_id
                )
            ).first()
        if row is None:
            raise NotFound(f"no worker {worker_id}", id=worker_id)
        return _worker(row)

    def list_workers(self, project_id: str, after: str | None, limit: int) -> list[Worker]:
        """Workers of a project, newest first."""
        query = (
            select(t.workers)
            .where(t.workers.c.project_id == project_id)
            .order_by(t.workers.c.id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(t.workers.c.id < after)
        with self.read() as conn:
            return [_worker(r) for r in conn.execute(query).all()]
