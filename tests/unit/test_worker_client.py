"""The worker client's reading of claims: action definitions validated once each."""

from __future__ import annotations

import json

import pydantic
import pytest

from oprun.domain.models import ActionDefinition
from oprun.worker.client import _Actions


def assignment(sa: str, action: dict[str, object]) -> dict[str, object]:
    return {
        "session_action_id": sa,
        "lease_epoch": 1,
        "lease_seconds": 30.0,
        "operation_id": "op_1",
        "task_id": "tsk_1",
        "action": action,
        "parameters": {"n": 1},
        "attempt": 1,
        "timeout": None,
    }


def test_a_repeated_definition_is_validated_once_and_a_changed_one_again():
    actions = _Actions()
    noop = {"name": "noop", "kind": "python", "entrypoint": "m:noop", "timeout": 5}
    body = json.dumps({"assignments": [assignment("sa_1", noop), assignment("sa_2", noop)]})
    first = actions.claim_response(body.encode())
    again = actions.claim_response(body.encode())
    definitions = {id(a.action) for a in [*first.assignments, *again.assignments]}
    assert len(definitions) == 1  # one model, shared: models are immutable
    assert first.assignments[0].action == ActionDefinition(
        name="noop", entrypoint="m:noop", timeout=5
    )
    changed = {**noop, "timeout": 7}
    body = json.dumps({"assignments": [assignment("sa_3", changed)]})
    assert actions.claim_response(body.encode()).assignments[0].action.timeout == 7
    assert first.assignments[1].session_action_id == "sa_2"


def test_an_invalid_definition_or_answer_is_refused_as_before():
    actions = _Actions()
    bad = {"name": "noop", "kind": "python", "max_attempts": 0}
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(json.dumps({"assignments": [assignment("sa_1", bad)]}).encode())
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(b"not json")
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(b'{"assignments": [{"action": {"name": "x"}}]}')


def test_the_cache_keeps_a_bounded_number_of_definitions():
    actions = _Actions(size=2)
    for i in range(5):
        action = {"name": f"a{i}", "kind": "python", "entrypoint": "m:f"}
        body = json.dumps({"assignments": [assignment("sa_1", action)]})
        actions.claim_response(body.encode())
    assert len(actions._seen) == 2
