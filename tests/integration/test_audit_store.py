"""The audit log's store contract, on both backends (issue 11)."""

from __future__ import annotations

import json

import pytest

from oprun.domain.audit import AuditEntry, AuditKind
from oprun.domain.errors import Conflict
from oprun.domain.roles import Role


def test_the_store_writes_the_row_in_the_changes_transaction(store, project) -> None:
    entry = AuditEntry(AuditKind.TOKEN_CREATED, project.id, client="192.0.2.1")
    made = store.create_token(project.id, "a", Role.ADMIN, "hash-1", audit=entry)
    with pytest.raises(Conflict):  # the same secret twice: the insert fails, so does the row
        store.create_token(project.id, "b", Role.ADMIN, "hash-1", audit=entry)
    rows = store.list_audit(project.id)
    assert [(r.kind, r.subject, r.client) for r in rows] == [
        ("token.created", made.id, "192.0.2.1")
    ]
    assert "hash-1" not in json.dumps([r.model_dump(mode="json") for r in rows])
    assert store.list_audit("prj_other") == []


def test_server_rows_are_listed_only_when_asked_for(store, project) -> None:
    store.record_audit(AuditEntry(AuditKind.AUTH_FAILED, None, client="192.0.2.7"))
    store.record_audit(AuditEntry(AuditKind.QUEUE_CONFIGURED, project.id, subject="fast"))
    assert [r.subject for r in store.list_audit(project.id)] == ["fast"]
    both = store.list_audit(project.id, server_level=True)
    assert [(r.project_id, r.kind) for r in both] == [
        (project.id, "queue.configured"),
        (None, "auth.failed"),
    ]
    assert [r.kind for r in store.list_audit(project.id, server_level=True, before=both[0].id)] == [
        "auth.failed"
    ]
    assert store.list_audit(project.id, server_level=True, kind="token.created") == []
