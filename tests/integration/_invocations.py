"""New operations made straight through the store, for store-level tests."""

from __future__ import annotations

from oprun.domain.models import Action, InvocationSource, Operation
from oprun.service.operations import params_digest
from oprun.store import NewOperation, Store


def invoke(store: Store, action: Action, n: int, queue: str = "default") -> list[Operation]:
    """`n` new operations of `action` on `queue`, each with its own parameters."""
    made = store.create_operations(
        [
            NewOperation(
                project_id=action.project_id,
                action=action,
                queue=queue,
                parameters={"i": i},
                params_digest=params_digest({"i": i, "queue": queue}),
                created_by="test",
                source_type=InvocationSource.MANUAL,
                source_id="test",
                idempotency_key=None,
                timeout=None,
            )
            for i in range(n)
        ]
    )
    return [op for op, _ in made if op is not None]
