"""A bulk request's new operations are records copied from one built per kind (issue 12).

Each copy must be exactly the record built from its own row.
"""

from __future__ import annotations

from types import SimpleNamespace

from oprun.store import rows
from oprun.store.invocations import UNSET_AT_CREATION, _created


def _row(n: int, **kw) -> dict:
    row = {
        "id": f"op_{n:032x}",
        "project_id": "prj_1",
        "action_id": "act_1",
        "action_version_id": "actv_1",
        "action_name": "a",
        "action_version": 3,
        "action_digest": "sha256:x",
        "queue_id": "q_1",
        "queue_name": "default",
        "status": "QUEUED",
        "n_queued": 1,
        "n_running": 0,
        "n_succeeded": 0,
        "n_failed": 0,
        "n_canceled": 0,
        "parameters": {"x": n, "s": f"é{n}"},
        "params_digest": "sha256:p",
        "created_by": "admin",
        "source_type": "Manual",
        "source_id": "tok_1",
        "idempotency_key": None if n % 2 else f"key-{n}",
        "timeout": None if n % 3 else 1.5 * n,
        "deadline_at": None,
        "attempts": 0,
        "max_attempts": 3,
        "log_bytes": 0,
        "steps": None,
        "policy": None,
        "requirements": None,
        "created_at": 1_700_000_000.25,
        "updated_at": 1_700_000_000.25,
    }
    return {**row, **kw}


def test_each_copied_record_is_the_record_of_its_row():
    templates: dict = {}
    made = [
        _row(1),
        _row(2),
        _row(3, n_queued=4),
        _row(4, queue_name="other"),
        _row(5, created_by="someone"),
        _row(6, source_type="Retry", source_id="op_0"),
        _row(7, action_version_id="actv_2", action_version=4, max_attempts=5),
        _row(8),
    ]
    for row in made:
        expected = rows.operation(SimpleNamespace(**UNSET_AT_CREATION, **row))
        got = _created(templates, row)
        assert got == expected
        assert got.model_dump_json() == expected.model_dump_json()
    assert len(templates) == 6
