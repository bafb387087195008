"""Session-level session actions: environments entered and exited, inputs synced.

The worker runs these for a session as a whole (not for one task) and names them
itself; they hold no lease. A session ends when its worker closes it, or when one
of its tasks' leases lapses; after that nothing more is accepted for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update

from oprun.domain.limits import MAX_LOG_LINE_BYTES
from oprun.domain.protocol import ReportOutcome, SessionReport
from oprun.domain.status import SessionActionStatus as SAS
from oprun.domain.status import WorkerStatus
from oprun.store import schema as t
from oprun.store.base import StoreBase, Tx
from oprun.store.notify import logs_key, operation_key
from oprun.store.transitions import end_session, lock_operations

_REPORTING = (WorkerStatus.IDLE.value, WorkerStatus.RUNNING.value, WorkerStatus.STOPPING.value)
SESSION_ACTION_KINDS = frozenset({"envEnter", "envExit", "syncInputJobAttachments"})


class SessionQueries(StoreBase):
    """Reports about whole sessions."""

    def apply_session_reports(
        self, worker_id: str, reports: Sequence[SessionReport], ended: Sequence[str] = ()
    ) -> list[ReportOutcome]:
        """Record a worker's session-level actions in order, then close `ended` sessions."""
        with self.write() as tx:
            status = tx.conn.execute(
                select(t.workers.c.status).where(t.workers.c.id == worker_id)
            ).scalar()
            if status not in _REPORTING:
                reason = f"worker is {status}"
                return [
                    ReportOutcome(
                        session_action_id=r.session_action_id, accepted=False, reason=reason
                    )
                    for r in reports
                ]
            sessions = sessions_of(tx, [r.session_id for r in reports] + list(ended))
            lock_operations(tx, (s.operation_id for s in sessions.values()))
            outcomes = (
                self._apply_session_reports(tx, worker_id, sessions, reports) if reports else []
            )
            self._close_sessions(tx, worker_id, sessions, ended)
            return outcomes

    def _apply_session_reports(
        self,
        tx: Tx,
        worker_id: str,
        sessions: dict[str, Any],
        reports: Sequence[SessionReport],
    ) -> list[ReportOutcome]:
        """Record environment and sync actions; the operations are already locked."""
        conn = tx.conn
        existing = {
            r.id: dict(r._mapping)
            for r in conn.execute(
                select(
                    t.session_actions.c.id,
                    t.session_actions.c.status,
                    t.session_actions.c.session_id,
                    t.session_actions.c.task_id,
                )
                .where(t.session_actions.c.id.in_(sorted({r.session_action_id for r in reports})))
                .with_for_update()
            )
        }
        outcomes = []
        for report in reports:
            session = sessions.get(report.session_id)
            reason = _refusal(session, worker_id, report, existing.get(report.session_action_id))
            if reason is None:
                self._record(tx, session, report, existing)
            outcomes.append(
                ReportOutcome(
                    session_action_id=report.session_action_id,
                    accepted=reason is None,
                    reason=reason,
                )
            )
        return outcomes

    def _record(
        self, tx: Tx, session: Any, report: SessionReport, existing: dict[str, dict[str, Any]]
    ) -> None:
        now, target = tx.now, SAS(report.status)
        ended = now if target.is_terminal() else None
        found = existing.get(report.session_action_id)
        if found is None:
            values = {
                "id": report.session_action_id,
                "session_id": session.id,
                "project_id": session.project_id,
                "operation_id": session.operation_id,
                "task_id": None,
                "worker_id": session.worker_id,
                "status": target.value,
                "lease_epoch": 0,
                "lease_expires_at": None,
                "definition": report.definition,
                "progress_message": report.message,
                "process_exit_code": report.exit_code,
                "created_at": now,
                "started_at": now,
                "ended_at": ended,
                "worker_updated_at": now,
            }
            tx.conn.execute(insert(t.session_actions).values(**values))
            existing[report.session_action_id] = {**values}
            if target is not SAS.RUNNING:
                tx.history(report.session_action_id, SAS.RUNNING.value, None)
            tx.history(report.session_action_id, target.value, report.message)
        elif found["status"] != target.value:
            tx.conn.execute(
                update(t.session_actions)
                .where(
                    t.session_actions.c.id == report.session_action_id,
                    t.session_actions.c.status == found["status"],
                )
                .values(
                    status=target.value,
                    ended_at=ended,
                    progress_message=report.message,
                    process_exit_code=report.exit_code,
                    worker_updated_at=now,
                )
            )
            found["status"] = target.value
            tx.history(report.session_action_id, target.value, report.message)
        if report.lines:
            tx.conn.execute(
                insert(t.logs),
                [
                    {
                        "operation_id": session.operation_id,
                        "session_action_id": report.session_action_id,
                        "stream": report.stream,
                        "line": line[:MAX_LOG_LINE_BYTES],
                        "at": now,
                    }
                    for line in report.lines
                ],
            )
            tx.keys.add(logs_key(session.operation_id))
        tx.keys.add(operation_key(session.operation_id))

    def _close_sessions(
        self, tx: Tx, worker_id: str, sessions: dict[str, Any], ids: Sequence[str]
    ) -> None:
        for session_id in ids:
            session = sessions.get(session_id)
            if is_open_for(session, worker_id):
                end_session(tx, session_id, "session closed by its worker")


def sessions_of(tx: Tx, session_ids: Sequence[str]) -> dict[str, Any]:
    """The sessions rows with these ids, by id (ids not found are left out)."""
    if not session_ids:
        return {}
    return {
        r.id: r
        for r in tx.conn.execute(
            select(
                t.sessions.c.id,
                t.sessions.c.worker_id,
                t.sessions.c.operation_id,
                t.sessions.c.project_id,
                t.sessions.c.ended_at,
            ).where(t.sessions.c.id.in_(sorted(set(session_ids))))
        )
    }


def is_open_for(session: Any, worker_id: str) -> bool:
    """Whether `session` (a sessions row, or None) is `worker_id`'s and has not ended."""
    return session is not None and session.worker_id == worker_id and session.ended_at is None


def _refusal(
    session: Any, worker_id: str, report: SessionReport, found: dict[str, Any] | None
) -> str | None:
    if session is None or session.worker_id != worker_id:
        return "unknown session"
    if session.ended_at is not None:
        return "session has ended"
    kinds = set(report.definition)
    if len(kinds) != 1 or not kinds <= SESSION_ACTION_KINDS:
        return f"definition must be one of {', '.join(sorted(SESSION_ACTION_KINDS))}"
    if found is not None:
        if found["session_id"] != report.session_id or found["task_id"] is not None:
            return "session action belongs to another session or to a task"
        current = SAS(found["status"])
        if current.value != report.status and not current.can_transition_to(SAS(report.status)):
            return f"session action is {current.value}"
    return None
