"""The hot path of reports: a batch's effects gathered in memory, written set-based.

`running`, `progress`, `log`, `succeeded` and `failed` reports (nearly all of them)
are applied here: each changes the in-memory state read under lock, checked
against the domain's transition tables, and `flush` writes every changed session
action, task and operation with one executemany statement per table. The rows
were read under lock (operations first), so the compare-and-set in each UPDATE
cannot lose.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from sqlalchemy import Table, bindparam, select

from oprun.domain.limits import MAX_LOG_LINE_BYTES, MAX_OPERATION_LOG_BYTES
from oprun.domain.models import TaskCounts
from oprun.domain.policy import retry_policy
from oprun.domain.protocol import Report
from oprun.domain.retry import retry_after_failure
from oprun.domain.status import OperationStatus as OS
from oprun.domain.status import SessionActionStatus as SAS
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.batch import BatchUpdate, Deferred, padded
from oprun.store.counters import COUNTER_OF, COUNTERS, bump
from oprun.store.notify import logs_key, operation_key
from oprun.store.transitions import settled

FAST_KINDS = frozenset({"running", "progress", "log", "succeeded", "failed"})

SA_COLUMNS = (
    "status",
    "started_at",
    "ended_at",
    "lease_expires_at",
    "progress_percent",
    "progress_message",
    "process_exit_code",
    "worker_updated_at",
)
OP_COLUMNS = (
    "step_code",
    "progress_percent",
    "progress_message",
    "result",
    "error",
    "exit_reason",
    "log_bytes",
)

SETTLED_COLUMNS = ("status", "started_at", "ended_at")
"""What settling an operation writes besides its reported columns (`exit_reason` is one)."""

_UPDATE_SA = BatchUpdate(t.session_actions, match=("id", "status"), write=SA_COLUMNS)
_UPDATE_TASK = BatchUpdate(
    t.tasks, match=("id", "status"), write=("status", "updated_at", "available_at")
)
_UPDATE_OP = BatchUpdate(t.operations, match=("id",), write=(*OP_COLUMNS, "updated_at"))
_UPDATE_OP_SETTLED = BatchUpdate(
    t.operations,
    match=("id",),
    write=(*OP_COLUMNS, *SETTLED_COLUMNS, "updated_at"),
    add=COUNTERS,
)
"""An operation's reported columns, counters and settled status in one row write."""
_STARTED = (
    select(t.tasks.c.operation_id)
    .where(
        t.tasks.c.operation_id.in_(bindparam("ids", expanding=True)),
        t.tasks.c.status.in_([OS.RUNNING.value, OS.CANCELING.value]),
    )
    .distinct()
)
_HOLDING = frozenset({OS.RUNNING.value, OS.CANCELING.value})


class ReportEffects:
    """The effects of the fast reports of one batch, until `flush` writes them."""

    def __init__(self, tx: Tx, sas: dict[str, dict[str, Any]], ops: dict[str, dict[str, Any]]):
        self._tx = tx
        self._sas = sas
        self._ops = ops
        self._sa_from: dict[str, str] = {}
        self._task_from: dict[str, tuple[str, str]] = {}  # task id -> (from, session action)
        self._dirty_ops: set[str] = set()
        self._deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._logs: list[dict[str, Any]] = []
        self.failures: list[tuple[str, str]] = []
        """(operation, worker) of each failed attempt, for quarantine."""
        self.ended_in_steps: set[str] = set()
        """Operations with ordered steps where a task ended: their next steps may start."""
        self._task_status = {sa["task_id"]: sa["task_status"] for sa in sas.values()}
        """Each task's status now, as far as the fast reports moved it."""
        self._rare = False

    # -- applying --------------------------------------------------------------------
    def apply(self, sa: dict[str, Any], report: Report) -> None:
        """Apply one accepted fast report."""
        kind = report.kind
        if kind == "log":
            self._log(sa, report)
        elif kind == "progress":
            self._progress(sa, report)
        elif kind == "running":
            self._start(sa)
        else:
            self._finish(sa, report)

    def _sa_to(self, sa: dict[str, Any], target: SAS, detail: str | None, **values: Any) -> bool:
        if not SAS(sa["status"]).can_transition_to(target):
            return False
        self._sa_from.setdefault(sa["id"], sa["status"])
        sa["status"] = target.value
        sa.update(values)
        self._tx.history(sa["id"], target.value, detail)
        return True

    def _task_to(
        self, sa: dict[str, Any], target: OS, detail: str | None, available_at: float | None = None
    ) -> bool:
        current = OS(sa["task_status"])
        if not current.can_transition_to(target):
            return False
        self._task_from.setdefault(sa["task_id"], (current.value, sa["id"]))
        sa["task_status"] = self._task_status[sa["task_id"]] = target.value
        if available_at is not None:
            sa["task_available_at"] = available_at
        before, after = COUNTER_OF[current], COUNTER_OF[target]
        if before != after:
            self._deltas[sa["operation_id"]][before] -= 1
            self._deltas[sa["operation_id"]][after] += 1
        self._tx.history(sa["task_id"], target.value, detail)
        return True

    def _op(self, sa: dict[str, Any]) -> dict[str, Any]:
        self._dirty_ops.add(sa["operation_id"])
        self._tx.keys.add(operation_key(sa["operation_id"]))
        return self._ops[sa["operation_id"]]

    def _start(self, sa: dict[str, Any]) -> None:
        if sa["status"] != SAS.ASSIGNED.value:
            return
        self._sa_to(sa, SAS.RUNNING, "started", started_at=self._tx.now)
        if self._task_to(sa, OS.RUNNING, "started"):
            self._tx.started.add(sa["operation_id"])

    def _progress(self, sa: dict[str, Any], report: Report) -> None:
        now = self._tx.now
        sa["worker_updated_at"] = now
        self._sa_from.setdefault(sa["id"], sa["status"])
        op = self._op(sa)
        data: dict[str, Any] = {}
        if report.percent is not None:
            sa["progress_percent"] = op["progress_percent"] = data["progress_percent"] = (
                report.percent
            )
        if report.message is not None:
            sa["progress_message"] = op["progress_message"] = data["progress_message"] = (
                report.message
            )
        if report.step_code is not None:
            op["step_code"] = data["step_code"] = report.step_code
        self._tx.event(op["project_id"], "operation.progress", sa["operation_id"], data)

    def _log(self, sa: dict[str, Any], report: Report) -> None:
        op = self._ops[sa["operation_id"]]
        for line in report.lines:
            line = line[:MAX_LOG_LINE_BYTES]
            if op["log_bytes"] + len(line) > MAX_OPERATION_LOG_BYTES:
                break
            op["log_bytes"] += len(line)
            self._logs.append(
                {
                    "operation_id": sa["operation_id"],
                    "session_action_id": sa["id"],
                    "stream": report.stream,
                    "line": line,
                    "at": self._tx.now,
                }
            )
        self._op(sa)
        self._tx.keys.add(logs_key(sa["operation_id"]))

    def _finish(self, sa: dict[str, Any], report: Report) -> None:
        target = SAS.SUCCEEDED if report.kind == "succeeded" else SAS.FAILED
        self._start(sa)
        detail = report.error_message if target is SAS.FAILED else None
        now = self._tx.now
        self._sa_to(
            sa,
            target,
            detail,
            ended_at=now,
            lease_expires_at=None,
            process_exit_code=report.exit_code,
            worker_updated_at=now,
        )
        op = self._ops[sa["operation_id"]]
        if op["steps"] is not None:
            self.ended_in_steps.add(sa["operation_id"])
        if target is SAS.FAILED:
            self.failures.append((sa["operation_id"], sa["worker_id"]))
            if self._retry(sa, report):
                return
        if not self._task_to(sa, OS(target.value), detail):
            return
        op = self._op(sa)
        if target is SAS.SUCCEEDED:
            if op["n_tasks"] <= 1:
                op.update(result=report.result, progress_percent=100.0)
            elif report.result is not None:
                op.update(result=report.result)  # the last task to report a result wins
        else:
            op.update(
                error={
                    "code": report.error_code or "FAILED",
                    "message": report.error_message or "the action failed",
                    "details": {} if report.exit_code is None else {"exit_code": report.exit_code},
                },
                exit_reason=report.error_code or "FAILED",
            )

    def _retry(self, sa: dict[str, Any], report: Report) -> bool:
        """Queue a failed attempt's task again, after a backoff, if its policy says so."""
        retry = retry_after_failure(
            retry_policy(self._ops[sa["operation_id"]]["policy"]),
            sa["task_attempts"],
            sa["task_max_attempts"],
            report.error_code,
            random.random(),
        )
        if retry is None:
            return False
        available_at = self._tx.now + retry.delay
        if not self._task_to(sa, OS.QUEUED, retry.message, available_at=available_at):
            return False
        self._logs.append(
            {
                "operation_id": sa["operation_id"],
                "session_action_id": sa["id"],
                "stream": "system",
                "line": retry.message,
                "at": self._tx.now,
            }
        )
        self._tx.keys.add(logs_key(sa["operation_id"]))
        self._op(sa)
        return True

    def reloaded(self) -> None:
        """A rare report changed rows behind these effects (they were re-read)."""
        self._rare = True

    # -- writing ---------------------------------------------------------------------
    def finish(self, touched: set[str]) -> None:
        """Write what the applied reports changed, settling each touched operation.

        The operations were read under lock; each one's reported columns, counter
        changes and status (rolled up from its counters) go in one row write.
        """
        known, ask = self._running_known(touched)
        # Unless something below reads the rows back (the tasks of operations whose
        # running tasks are not all known here, or a quarantine's count of failed
        # attempts), the writes wait for the statement that ends the transaction.
        later = not ask and not self.failures
        self._write_attempts(later)
        running = known
        if ask:
            running |= set(self._tx.conn.execute(_STARTED, {"ids": padded(ask)}).scalars())
        changes = []
        for op_id in sorted(touched):
            op = self._ops[op_id]
            deltas = self._deltas.get(op_id, {})
            counts = TaskCounts(
                queued=op["n_queued"] + deltas.get("n_queued", 0),
                running=op["n_running"] + deltas.get("n_running", 0),
                succeeded=op["n_succeeded"] + deltas.get("n_succeeded", 0),
                failed=op["n_failed"] + deltas.get("n_failed", 0),
                canceled=op["n_canceled"] + deltas.get("n_canceled", 0),
            )
            values = settled(self._tx, op, counts, op_id in running)
            if values is None and op_id not in self._dirty_ops and not any(deltas.values()):
                continue
            op.update(values or {"updated_at": self._tx.now})
            changes.append(
                {
                    "b_id": op_id,
                    "v_updated_at": self._tx.now,
                    **{f"v_{c}": op[c] for c in (*OP_COLUMNS, *SETTLED_COLUMNS)},
                    **{f"d_{c}": deltas.get(c, 0) for c in COUNTERS},
                }
            )
        self._write(_UPDATE_OP_SETTLED, changes, later)
        self._dirty_ops.clear()
        self._deltas.clear()

    def _running_known(self, touched: set[str]) -> tuple[set[str], list[str]]:
        """Operations known to hold a RUNNING or CANCELING task, and those to read.

        Of the touched operations: those known from the reports to have such a task
        after the writes, and (sorted) those whose tasks must be read to know.
        """
        known = set()
        if not self._rare:
            # An operation of one task: that task's status is the one tracked here.
            known = {op_id for op_id in touched if self._ops[op_id]["n_tasks"] == 1}
        running = {
            sa["operation_id"]
            for sa in self._sas.values()
            if sa["operation_id"] in known and self._task_status[sa["task_id"]] in _HOLDING
        }
        return running, sorted(touched - known)

    def _write(self, target: Table | BatchUpdate, rows: list[dict[str, Any]], later: bool) -> None:
        """Write `rows` now, or at the end of the transaction (`Tx.later`)."""
        if later:
            self._tx.later(target, rows)
        else:
            Deferred(target, rows).run(self._tx.conn)

    def flush(self) -> None:
        """Write what the applied reports changed, one statement per table."""
        self._write_attempts()
        conn, now = self._tx.conn, self._tx.now
        if self._dirty_ops:
            _UPDATE_OP.run(
                conn,
                [
                    {
                        "b_id": op_id,
                        "v_updated_at": now,
                        **{f"v_{c}": self._ops[op_id][c] for c in OP_COLUMNS},
                    }
                    for op_id in sorted(self._dirty_ops)
                ],
            )
        bump(self._tx, self._deltas)
        for op_id, deltas in self._deltas.items():  # the rows read stay true to the database
            op = self._ops[op_id]
            for counter, change in deltas.items():
                op[counter] += change
        self._dirty_ops.clear()
        self._deltas.clear()

    def _write_attempts(self, later: bool = False) -> None:
        """Write the session actions, tasks and log lines changed so far (or `later`)."""
        now = self._tx.now
        sas = [
            {
                "b_id": sa_id,
                "b_status": original,
                **{f"v_{c}": self._sas[sa_id][c] for c in SA_COLUMNS},
            }
            for sa_id, original in self._sa_from.items()
        ]
        tasks = [
            {
                "b_id": task_id,
                "b_status": original,
                "v_status": self._sas[sa_id]["task_status"],
                "v_updated_at": now,
                "v_available_at": self._sas[sa_id]["task_available_at"],
            }
            for task_id, (original, sa_id) in self._task_from.items()
        ]
        self._write(_UPDATE_SA, sas, later)
        self._write(_UPDATE_TASK, tasks, later)
        self._write(t.logs, self._logs, later)
        self._sa_from.clear()
        self._task_from.clear()
        self._logs = []
