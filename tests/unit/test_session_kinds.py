"""Session actions in words (kind and subject), their CLI table, and their list request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from rich.console import Console

from oprun.cli._render import session_action_detail, session_actions_table
from oprun.domain import session_kinds
from oprun.domain.errors import ValidationError
from oprun.domain.models import SessionAction
from oprun.domain.session_kinds import describe
from oprun.sdk import _endpoints as E

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("definition", "kind", "subject"),
    [
        ({"envEnter": {"environmentId": "JobEnv"}}, "envEnter", "JobEnv"),
        ({"envExit": {"environmentId": "Conda"}}, "envExit", "Conda"),
        ({"syncInputJobAttachments": {}}, "syncInputs", ""),
        ({"syncInputJobAttachments": {"stepId": "render"}}, "syncInputs", "render"),
        (
            {
                "taskRun": {
                    "taskId": "task_1",
                    "stepId": "render",
                    "parameters": {"frame": {"int": "7"}, "eye": {"string": "left"}},
                }
            },
            "taskRun",
            "render frame=7 eye=left",
        ),
        ({"taskRun": {"taskId": "task_1", "stepId": "main", "parameters": {}}}, "taskRun", "main"),
        ({"taskRun": {"parameters": {"cfg": {"a": 1, "b": 2}}}}, "taskRun", 'cfg={"a": 1, "b": 2}'),
        ({"someFutureKind": {"x": 1}}, "someFutureKind", ""),
        ({"envEnter": "not a mapping"}, "envEnter", ""),
        ({}, "unknown", ""),
    ],
)
def test_describe_names_the_kind_and_what_it_acts_on(
    definition: dict[str, Any], kind: str, subject: str
) -> None:
    what = describe(definition)
    assert (what.kind, what.subject) == (kind, subject)
    assert str(what) == f"{kind} {subject}".strip()


def test_describe_keeps_the_task_and_titles_each_kind() -> None:
    what = describe({"taskRun": {"taskId": "task_9", "stepId": "s", "parameters": {}}})
    assert (what.task_id, what.step_id, what.title) == ("task_9", "s", "Task run")
    assert describe({"envEnter": {"environmentId": "E"}}).title == "Env enter"
    assert describe({"syncInputJobAttachments": {}}).title == "Sync inputs"


def _sa(sa_id: str, session: str, definition: dict[str, Any], **kw: Any) -> SessionAction:
    fields = {
        "id": sa_id,
        "session_id": session,
        "operation_id": "op_1",
        "task_id": None,
        "worker_id": "wk_1",
        "status": "SUCCEEDED",
        "lease_epoch": 1,
        "definition": definition,
    }
    return SessionAction.model_validate(fields | kw)


def _text(renderable: Any) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _flat(renderable: Any) -> str:
    return " ".join(_text(renderable).split())


def test_cli_table_groups_by_session_and_names_each_kind() -> None:
    actions = [
        _sa("sa_1", "sess_a", {"envEnter": {"environmentId": "JobEnv"}}),
        _sa(
            "sa_2",
            "sess_b",
            {
                "taskRun": {
                    "taskId": "task_2",
                    "stepId": "render",
                    "parameters": {"f": {"int": "2"}},
                }
            },
            started_at=T0,
            ended_at=T0 + timedelta(seconds=4.25),
            process_exit_code=0,
            progress_percent=100.0,
            progress_message="done",
        ),
        _sa("sa_3", "sess_a", {"envExit": {"environmentId": "JobEnv"}}, status="FAILED"),
    ]
    lines = _text(session_actions_table(actions)).splitlines()
    assert lines[0].split() == [
        "SESSION", "ID", "KIND", "STATUS", "WORKER", "STARTED", "DURATION", "EXIT", "PROGRESS"
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:] if line.strip()]
    assert [r[0] for r in rows] == ["sess_a", "sa_3", "sess_b"]  # a session's id on its first row
    assert rows[0][1:4] == ["sa_1", "envEnter", "JobEnv"]
    assert rows[1][:3] == ["sa_3", "envExit", "JobEnv"] and "FAILED" in rows[1]
    assert rows[2][1:5] == ["sa_2", "taskRun", "render", "f=2"]
    assert rows[2][-4:] == ["4.2s", "0", "100%", "done"]


def test_cli_detail_shows_the_environment_or_the_step_and_parameters() -> None:
    env = _flat(session_action_detail(_sa("sa_1", "sess_a", {"envEnter": {"environmentId": "E"}})))
    assert "kind envEnter environment E status SUCCEEDED" in env and "task -" in env
    run = _flat(
        session_action_detail(
            _sa("sa_2", "sess_a", {"taskRun": {"stepId": "s", "parameters": {"f": {"int": "3"}}}})
        )
    )
    assert "kind taskRun step s parameters f=3" in run and "status history" in run


def test_listing_session_actions_needs_a_filter_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError) as caught:
        E.list_session_actions(
            operation_id=None, session_id="", task_id=None, cursor=None, limit=None
        )
    assert caught.value.details == {"fields": ["operation_id", "session_id", "task_id"]}
    call = E.list_session_actions(
        operation_id="op_1", session_id=None, task_id="task_1", cursor="c", limit=10
    )
    assert (call.method, call.path, call.retry_safe) == ("GET", "/v1/session-actions", True)
    assert call.query() == {"operation_id": "op_1", "task_id": "task_1", "cursor": "c", "limit": 10}


def test_the_kinds_a_worker_session_runs_are_definition_tags_the_domain_reads():
    assert set(get_args(session_kinds.RunnableKind)) <= set(session_kinds.KINDS)
