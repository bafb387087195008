"""Per-operation task counters: maintained on every task transition, never counted by scan."""

from __future__ import annotations

from collections.abc import Mapping

from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import Tx
from oprun.store.batch import BatchUpdate

COUNTER_OF = {
    OS.QUEUED: "n_queued",
    OS.SCHEDULED: "n_running",
    OS.RUNNING: "n_running",
    OS.CANCELING: "n_running",
    OS.SUCCEEDED: "n_succeeded",
    OS.FAILED: "n_failed",
    OS.CANCELED: "n_canceled",
}
"""Which counter of its operation a task in each status counts towards."""
COUNTERS = ("n_queued", "n_running", "n_succeeded", "n_failed", "n_canceled")

_BUMP = BatchUpdate(t.operations, match=("id",), add=COUNTERS)


def bump(tx: Tx, deltas: Mapping[str, Mapping[str, int]]) -> None:
    """Add `deltas` (operation id -> counter -> change) in one statement."""
    if deltas:
        _BUMP.run(
            tx.conn,
            [
                {"b_id": oid, **{f"d_{name}": d.get(name, 0) for name in COUNTERS}}
                for oid, d in deltas.items()
            ],
        )
