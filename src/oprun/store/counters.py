"""Per-operation task counters: maintained on every task transition, never counted by scan."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import bindparam, update

from oprun.domain.status import OperationStatus as OS
from oprun.store import schema as t
from oprun.store.base import Tx

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

_BUMP = (
    update(t.operations)
    .where(t.operations.c.id == bindparam("oid"))
    .values({name: getattr(t.operations.c, name) + bindparam(f"d_{name}") for name in COUNTERS})
)


def bump(tx: Tx, deltas: Mapping[str, Mapping[str, int]]) -> None:
    """Add `deltas` (operation id -> counter -> change) in one statement."""
    if deltas:
        tx.conn.execute(
            _BUMP,
            [
                {"oid": oid, **{f"d_{name}": d.get(name, 0) for name in COUNTERS}}
                for oid, d in deltas.items()
            ],
        )
