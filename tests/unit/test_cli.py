"""The `oprun` CLI over a scripted server: output, one-line errors and exit codes."""

from __future__ import annotations

import io
import itertools
import json

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from oprun import NotFound
from oprun.cli import _wait
from oprun.cli._common import State
from oprun.cli.main import app, hoist_global_options
from oprun.domain import models
from oprun.sdk import Operation

from ._sdk_stub import Stub, action_json, body, error, log_json, ok, op_json

OP = "/v1/operations/op_1"
WAIT = "/v1/operations/op_1:wait"


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
def cli(stub):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), obj=State(client_factory=lambda u, t: stub.client()))

    return run


def _one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- errors ----------------------------------------------------------------------------
def test_an_api_error_is_one_line_and_exit_1(cli, stub):
    stub.on("GET", "/v1/operations/op_x", error("NOT_FOUND", 404, "no operation op_x"))
    result = cli("ops", "get", "op_x")
    assert result.exit_code == 1
    assert _one_error_line(result) == "error: NOT_FOUND: no operation op_x"
    assert result.stdout == ""


def test_a_validation_error_exits_2(cli, stub):
    stub.on(
        "POST",
        "/v1/operations",
        error("VALIDATION", 400, "parameter 'width' must be an int, got 'abc'"),
    )
    result = cli("invoke", "resize", "-p", "width=abc")
    assert result.exit_code == 2
    assert _one_error_line(result) == (
        "error: VALIDATION: parameter 'width' must be an int, got 'abc'"
    )


def test_a_bad_server_setting_is_one_line_naming_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("OPRUN_DATABASE_URL", f"sqlite:///{tmp_path / 'oprun.db'}")
    monkeypatch.setenv("OPRUN_LEASE_SECONDS", "abc")
    result = CliRunner().invoke(app, ["server", "--port", "1"])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert line.startswith("error: VALIDATION: OPRUN_LEASE_SECONDS='abc' is not valid: "), line
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("ops", "get"),
        ("bogus",),
        ("invoke", "resize", "-p", "no-equals-sign"),
        ("-o", "yaml", "ops", "list"),
        ("tokens", "create", "ci", "--role", "superuser"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, args):
    result = cli(*args)
    assert result.exit_code == 2
    assert _one_error_line(result).startswith("error: USAGE: ")


def test_an_unreachable_server_is_one_line(stub):
    stub.on("GET", OP, httpx.ConnectError("[Errno 111] Connection refused"))
    runner = CliRunner()
    state = State(client_factory=lambda u, t: stub.client(retries=0))
    result = runner.invoke(app, ["ops", "get", "op_1"], obj=state)
    assert result.exit_code == 1
    assert _one_error_line(result) == (
        "error: UNAVAILABLE: cannot reach oprun at http://oprun.test: "
        "[Errno 111] Connection refused"
    )


def test_a_crash_is_one_line_unless_debug(cli, stub):
    stub.on("GET", OP, lambda request: (_ for _ in ()).throw(RuntimeError("boom")))
    result = cli("ops", "get", "op_1")
    assert result.exit_code == 1
    assert "RuntimeError: boom" in _one_error_line(result)


def test_debug_lets_the_exception_through(cli, stub):
    stub.on("GET", "/v1/operations/op_x", error("NOT_FOUND", 404, "no operation op_x"))
    result = cli("--debug", "ops", "get", "op_x")
    assert result.exit_code == 1
    assert isinstance(result.exception, NotFound)


def test_global_options_may_follow_the_command():
    assert hoist_global_options(["ops", "list", "-o", "json", "--url", "http://x"]) == [
        "-o",
        "json",
        "--url",
        "http://x",
        "ops",
        "list",
    ]
    assert hoist_global_options(["ops", "get", "op_1", "--debug", "-ojson"]) == [
        "--debug",
        "-ojson",
        "ops",
        "get",
        "op_1",
    ]
    assert hoist_global_options(["invoke", "x", "--", "-o"]) == ["invoke", "x", "--", "-o"]


# -- invoke ----------------------------------------------------------------------------
def test_invoke_sends_params_as_strings_and_json_when_it_looks_like_json(cli, stub):
    stub.on("POST", "/v1/operations", ok(op_json(), 201))
    result = cli(
        "invoke",
        "resize",
        "-p",
        "width=640",
        "-p",
        'data={"a": 1}',
        "-p",
        "tags=[1,2]",
        "--version",
        "2",
        "--idempotency-key",
        "k1",
    )
    assert result.exit_code == 0, result.stderr
    sent = body(stub.requests[0])
    assert sent["parameters"] == {"width": "640", "data": {"a": 1}, "tags": [1, 2]}
    assert (sent["version"], sent["idempotency_key"]) == (2, "k1")
    assert "op_1" in result.stdout


def test_invoke_json_output_is_the_operation(cli, stub):
    stub.on("POST", "/v1/operations", ok(op_json(), 201))
    result = cli("-o", "json", "invoke", "resize")
    assert json.loads(result.stdout)["id"] == "op_1"


def test_invoke_noop_exits_0(cli, stub):
    stub.on("POST", "/v1/operations", httpx.Response(204))
    result = cli("invoke", "thumbnail", "--wait")
    assert result.exit_code == 0
    assert "nothing to do" in result.stdout


@pytest.mark.parametrize(("status", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELED", 3)])
def test_invoke_wait_exit_code_follows_the_outcome(cli, stub, status, code):
    stub.on("POST", "/v1/operations", ok(op_json(), 201))
    extra = {"error": {"code": "ValueError", "message": "bad"}} if status == "FAILED" else {}
    stub.on("GET", WAIT, ok(op_json(status="RUNNING")), ok(op_json(status=status, **extra)))
    result = cli("invoke", "resize", "--wait")
    assert result.exit_code == code, result.stderr
    assert status in result.stdout
    if code:
        assert status in _one_error_line(result)
    else:
        assert result.stderr == ""


def test_invoke_wait_times_out_with_exit_4(cli, stub, monkeypatch):
    clock = itertools.count(0, 10)
    monkeypatch.setattr("oprun.sdk.client.time.monotonic", lambda: next(clock))
    stub.on("POST", "/v1/operations", ok(op_json(), 201))
    stub.on("GET", WAIT, ok(op_json(status="RUNNING")))
    stub.on("GET", OP, ok(op_json(status="RUNNING")))
    result = cli("invoke", "resize", "--wait", "--timeout", "15")
    assert result.exit_code == 4
    assert _one_error_line(result).startswith("error: TIMEOUT: operation op_1 is still RUNNING")


def test_ops_wait_prints_the_result(cli, stub):
    stub.on("GET", OP, ok(op_json(status="RUNNING")))
    stub.on("GET", WAIT, ok(op_json(status="SUCCEEDED", result={"pixels": 42})))
    result = cli("ops", "wait", "op_1")
    assert result.exit_code == 0
    assert '"pixels": 42' in result.stdout


def test_progress_bar_shows_percent_step_and_message(stub):
    stub.on(
        "GET",
        WAIT,
        ok(op_json(status="RUNNING", step_code="DOWNLOADING", progress={"percent": 20})),
        ok(
            op_json(
                status="RUNNING",
                step_code="PROCESSING",
                progress={"percent": 70, "message": "frame 7/10"},
            )
        ),
        ok(op_json(status="SUCCEEDED", progress={"percent": 100})),
    )
    client = stub.client()
    op = Operation(client, models.Operation.model_validate(op_json()))
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    final = _wait.wait_with_bar(client, op, None, console)
    assert final.state == "SUCCEEDED"
    assert "100%" in screen.getvalue()
    assert all(float(r.url.params["timeout"]) <= 1 for r in stub.sent("GET", WAIT))


# -- ops -------------------------------------------------------------------------------
def test_ops_list_is_a_table_with_the_agreed_columns(cli, stub):
    stub.on(
        "GET",
        "/v1/operations",
        ok(
            {
                "items": [
                    op_json("op_2", "RUNNING", step_code="PROCESSING", progress={"percent": 50}),
                    op_json("op_1", "SUCCEEDED"),
                ],
                "next_cursor": None,
            }
        ),
    )
    result = cli("ops", "list", "--status", "running", "--limit", "5")
    assert result.exit_code == 0, result.stderr
    for text in ("ID", "ACTION", "STATUS", "STEP", "PROGRESS", "CREATED BY", "AGE"):
        assert text in result.stdout
    assert "op_2" in result.stdout and "PROCESSING" in result.stdout and "50%" in result.stdout
    params = stub.requests[0].url.params
    assert (params["status"], params["limit"]) == ("RUNNING", "5")


def test_ops_list_json(cli, stub):
    stub.on("GET", "/v1/operations", ok({"items": [op_json()], "next_cursor": None}))
    result = cli("ops", "list", "-o", "json")
    assert [o["id"] for o in json.loads(result.stdout)] == ["op_1"]


def test_ops_get_shows_status_history(cli, stub):
    history = [
        {"status": "QUEUED", "at": "2025-01-01T00:00:00Z"},
        {"status": "RUNNING", "at": "2025-01-01T00:00:01Z", "detail": "on wk_1"},
    ]
    stub.on("GET", OP, ok(op_json(status="RUNNING", history=history)))
    result = cli("ops", "get", "op_1")
    assert result.exit_code == 0
    assert "status history" in result.stdout and "on wk_1" in result.stdout


def test_ops_get_does_not_interpret_markup_in_server_text(cli, stub):
    stub.on("GET", OP, ok(op_json(progress={"message": "[bold]x[/oops]"})))
    result = cli("ops", "get", "op_1")
    assert result.exit_code == 0, result.stderr
    assert "[bold]x[/oops]" in result.stdout


def test_ops_logs_prints_lines(cli, stub):
    stub.on(
        "GET",
        "/v1/operations/op_1/logs",
        ok({"items": [log_json(1, "hello"), log_json(2, "world")], "next_cursor": "2"}),
        ok({"items": [], "next_cursor": "2"}),
    )
    result = cli("ops", "logs", "op_1")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["hello", "world"]


@pytest.mark.parametrize(
    ("command", "method", "path"),
    [
        ("cancel", "POST", "/v1/operations/op_1:cancel"),
        ("retry", "POST", "/v1/operations/op_1:retry"),
        ("delete", "DELETE", "/v1/operations/op_1"),
    ],
)
def test_ops_changes(cli, stub, command, method, path):
    stub.on(method, path, httpx.Response(204) if method == "DELETE" else ok(op_json()))
    result = cli("ops", command, "op_1")
    assert result.exit_code == 0, result.stderr
    assert len(stub.sent(method, path)) == 1


def test_deleting_a_running_operation_is_a_conflict(cli, stub):
    stub.on("DELETE", OP, error("CONFLICT", 409, "operation op_1 is still RUNNING"))
    result = cli("ops", "delete", "op_1")
    assert result.exit_code == 1
    assert _one_error_line(result) == "error: CONFLICT: operation op_1 is still RUNNING"


# -- actions, tokens, workers ----------------------------------------------------------
def test_actions_list_and_get(cli, stub):
    stub.on("GET", "/v1/actions", ok({"items": [action_json()], "next_cursor": None}))
    stub.on("GET", "/v1/actions/resize", ok(action_json()))
    listed = cli("actions", "list")
    assert listed.exit_code == 0 and "resize" in listed.stdout and "width:int" in listed.stdout
    got = cli("actions", "get", "resize", "--version", "1")
    assert got.exit_code == 0 and "pkg.mod:fn" in got.stdout
    assert stub.sent("GET", "/v1/actions/resize")[0].url.params["version"] == "1"


def test_actions_register_an_app(cli, stub):
    stub.on("POST", "/v1/actions", ok(action_json("add"), 201))
    result = cli("actions", "register", "tests.unit._cli_app:app")
    assert result.exit_code == 0, result.stderr
    assert [body(r)["name"] for r in stub.requests] == ["add"]


def test_actions_register_an_unimportable_module_is_a_usage_error(cli):
    result = cli("actions", "register", "no_such_module_here:app")
    assert result.exit_code == 2
    assert "cannot import 'no_such_module_here'" in _one_error_line(result)


def test_tokens_create_prints_the_secret_once(cli, stub):
    token = {
        "id": "tok_1",
        "project_id": "prj_1",
        "name": "ci",
        "role": "operator",
        "created_at": "2025-01-01T00:00:00Z",
    }
    stub.on("POST", "/v1/tokens", ok({"token": token, "secret": "s3cret"}, 201))
    stub.on("GET", "/v1/tokens", ok({"items": [token], "next_cursor": None}))
    stub.on("DELETE", "/v1/tokens/tok_1", ok({**token, "revoked_at": "2025-01-02T00:00:00Z"}))
    created = cli("tokens", "create", "ci", "--role", "operator")
    assert created.exit_code == 0, created.stderr
    assert "s3cret" in created.stdout
    assert body(stub.requests[0]) == {"name": "ci", "role": "operator"}
    listed = cli("tokens", "list")
    assert "tok_1" in listed.stdout and "s3cret" not in listed.stdout
    assert cli("tokens", "revoke", "tok_1").exit_code == 0


def test_ops_tasks_follows_the_pages(cli, stub):
    def task(n: int) -> dict:
        return {
            "id": f"task_{n}",
            "operation_id": "op_1",
            "project_id": "prj_1",
            "step_id": "Render",
            "status": "SUCCEEDED",
            "parameters": {"Frame": n},
            "attempts": 1,
            "max_attempts": 3,
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }

    stub.on(
        "GET",
        "/v1/operations/op_1/tasks",
        ok({"items": [task(1)], "next_cursor": "c1"}),
        ok({"items": [task(2)], "next_cursor": None}),
    )
    result = cli("ops", "tasks", "op_1", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert [t["id"] for t in json.loads(result.stdout)] == ["task_1", "task_2"]
    assert stub.requests[1].url.params["cursor"] == "c1"


def test_workers_list(cli, stub):
    worker = {
        "id": "wk_1",
        "project_id": "prj_1",
        "name": "w1",
        "hostname": "host-a",
        "status": "IDLE",
        "queues": ["default"],
        "created_at": "2025-01-01T00:00:00Z",
    }
    stub.on("GET", "/v1/workers", ok({"items": [worker], "next_cursor": None}))
    result = cli("workers", "list")
    assert result.exit_code == 0
    assert "wk_1" in result.stdout and "host-a" in result.stdout


# -- openjd actions and queues -----------------------------------------------------------
def _openjd_action_json(name: str, **definition) -> dict:
    saved = action_json(name)
    saved["definition"] = {"name": name, "kind": "openjd", "parameters": [], **definition}
    return saved


def test_actions_register_template_sends_the_bundle_and_shows_its_steps(cli, stub, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "template.yaml").write_text(
        "specificationVersion: 'jobtemplate-2023-09'\nname: j\n"
        "parameterDefinitions: [{name: Dir, type: PATH, default: scripts}]\n"
        "steps: [{name: Render, script: {actions: {onRun: {command: ls}}}}]\n"
    )
    template = {"steps": [{"name": "Render"}]}
    stub.on("POST", "/v1/actions", ok(_openjd_action_json("render", template=template), 201))
    result = cli(
        "actions", "register-template", "render", str(bundle), "--queue", "gpu",
        "--max-attempts", "2", "--timeout", "30", "--retry-on", "EXIT", "--retry-on", "CRASHED",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "openjd" in result.stdout and "Render" in result.stdout
    sent = body(stub.requests[0])
    assert sent["retry"]["retry_on"] == ["EXIT", "CRASHED"]
    assert (sent["kind"], sent["queue"], sent["max_attempts"], sent["timeout"]) == (
        "openjd",
        "gpu",
        2,
        30,
    )
    assert sent["template"]["parameterDefinitions"][0]["default"] == str(bundle / "scripts")


def test_actions_register_template_of_a_missing_path_is_a_usage_error(cli, stub, tmp_path):
    result = cli("actions", "register-template", "render", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "no template file or job bundle directory at" in _one_error_line(result)
    assert stub.requests == []


def test_actions_register_command_sends_the_argv_after_double_dash(cli, stub):
    saved = _openjd_action_json("greet", command=["bash", "-c", "echo hi {{Param.Who}}"])
    stub.on("POST", "/v1/actions", ok(saved, 201))
    result = cli(
        "-o", "json", "actions", "register-command", "greet", "--queue", "q1",
        "--", "bash", "-c", "echo hi {{Param.Who}}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["definition"]["command"][0] == "bash"
    sent = body(stub.requests[0])
    assert sent["retry"]["retry_on"] == ["CRASHED"]  # the definition's default
    assert sent["command"] == ["bash", "-c", "echo hi {{Param.Who}}"]
    assert (sent["kind"], sent["queue"]) == ("openjd", "q1")
    table = cli("actions", "register-command", "greet", "--", "bash", "-c", "echo hi")
    assert "bash -c 'echo hi {{Param.Who}}'" in table.stdout  # the saved command, quoted


def _queue_stats(name: str, priority: int = 0, limit: int | None = None) -> dict:
    return {
        "name": name,
        "priority": priority,
        "max_concurrency": limit,
        "depth": 4,
        "running": 1,
        "succeeded": 7,
        "failed": 2,
        "throughput": [0] * 60,
        "at": "2025-01-01T00:00:00Z",
    }


def _queue(request) -> httpx.Response:
    settings = json.loads(request.content)
    name = request.url.path.rsplit("/", 1)[1]
    return ok(
        {"id": "q_1", "project_id": "prj_1", "name": name, "created_at": "2025-01-01T00:00:00Z"}
        | settings
    )


def test_queues_list_is_a_table_and_json(cli, stub):
    page = {"items": [_queue_stats("render", 10, 4), _queue_stats("default")], "next_cursor": None}
    stub.on("GET", "/v1/queues", ok(page))
    result = cli("queues", "list")
    assert result.exit_code == 0, result.stderr
    header, render, default = result.stdout.splitlines()
    assert header.split() == [
        "NAME", "PRIORITY", "MAX", "CONCURRENCY", "QUEUED", "RUNNING", "SUCCEEDED", "1H",
        "FAILED", "1H",
    ]  # fmt: skip
    assert render.split() == ["render", "10", "4", "4", "1", "7", "2"]
    assert default.split()[:3] == ["default", "0", "no"]
    listed = json.loads(cli("queues", "list", "-o", "json").stdout)
    assert [(q["name"], q["max_concurrency"]) for q in listed] == [("render", 4), ("default", None)]


@pytest.mark.parametrize(
    ("args", "sent"),
    [
        (["--priority", "3"], {"priority": 3, "max_concurrency": 4}),
        (["--max-concurrency", "8"], {"priority": 10, "max_concurrency": 8}),
        (["--no-limit"], {"priority": 10, "max_concurrency": None}),
        (["--priority", "-5", "--no-limit"], {"priority": -5, "max_concurrency": None}),
    ],
)
def test_queues_set_keeps_the_settings_not_given(cli, stub, args, sent):
    page = {"items": [_queue_stats("render", 10, 4)], "next_cursor": None}
    stub.on("GET", "/v1/queues", ok(page)).on("PUT", "/v1/queues/render", _queue)
    result = cli("queues", "set", "render", *args)
    assert result.exit_code == 0, result.stderr
    assert body(stub.sent("PUT", "/v1/queues/render")[0]) == sent
    limit = "no limit" if sent["max_concurrency"] is None else sent["max_concurrency"]
    assert result.stdout == f"render: priority {sent['priority']}, max concurrency {limit}\n"


def test_queues_set_of_a_new_queue_starts_from_the_defaults(cli, stub):
    stub.on("GET", "/v1/queues", ok({"items": [], "next_cursor": None}))
    stub.on("PUT", "/v1/queues/batch", _queue)
    result = cli("-o", "json", "queues", "set", "batch", "--max-concurrency", "2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["max_concurrency"] == 2
    assert body(stub.sent("PUT", "/v1/queues/batch")[0]) == {"priority": 0, "max_concurrency": 2}


def test_queues_set_with_both_a_limit_and_no_limit_is_a_usage_error(cli, stub):
    result = cli("queues", "set", "render", "--max-concurrency", "2", "--no-limit")
    assert result.exit_code == 2
    assert "give --max-concurrency N or --no-limit, not both" in _one_error_line(result)
    assert stub.requests == []
