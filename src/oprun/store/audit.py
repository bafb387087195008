"""Queries on the audit log: record a row on its own, read a project's rows newest first.

Rows describing a change are written by the change's own transaction (`Tx.audit`);
`record_audit` is for events that change nothing else (a failed authentication).
The log is never purged with operations: `store/retention.py` does not touch it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select

from oprun.domain.audit import AuditActor, AuditEntry, AuditRecord
from oprun.domain.roles import Role
from oprun.store import schema as t
from oprun.store.base import StoreBase, at, audit_row

_a = t.audit_log.c


def _record(row: Any) -> AuditRecord:
    actor = None
    if row.actor_id is not None:
        role = None if row.actor_role is None else Role(row.actor_role)
        actor = AuditActor(token_id=row.actor_id, name=row.actor_name, role=role)
    return AuditRecord(
        id=row.id,
        at=at(row.at),
        project_id=row.project_id,
        kind=row.kind,
        actor=actor,
        client=row.client,
        request_id=row.request_id,
        subject=row.subject,
        details=row.details or {},
    )


class AuditQueries(StoreBase):
    """The audit log of every project, and the server's own rows (project null)."""

    def record_audit(self, entry: AuditEntry) -> None:
        """Write one audit row in a transaction of its own."""
        with self.write() as tx:
            tx.conn.execute(insert(t.audit_log).values(**audit_row(entry, tx.now)))

    def list_audit(
        self,
        project_id: str,
        *,
        server_level: bool = False,
        before: int | None = None,
        limit: int = 50,
        kind: str | None = None,
        actor_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[AuditRecord]:
        """Up to `limit` rows of a project, newest first, older than the id `before`.

        With `server_level`, the server's own rows (project null) are included. `kind`
        and `actor_id` match exactly; `since` (inclusive) and `until` (exclusive) bound
        `at`, in epoch seconds.
        """
        where = _a.project_id == project_id
        if server_level:
            where = or_(where, _a.project_id.is_(None))
        query = select(t.audit_log).where(where).order_by(_a.id.desc()).limit(limit)
        if before is not None:
            query = query.where(_a.id < before)
        if kind is not None:
            query = query.where(_a.kind == kind)
        if actor_id is not None:
            query = query.where(_a.actor_id == actor_id)
        if since is not None:
            query = query.where(_a.at >= since)
        if until is not None:
            query = query.where(_a.at < until)
        with self.read() as conn:
            return [_record(r) for r in conn.execute(query).all()]
