"""`oprun login`, `--profile`, `oprun events`, help examples and shell completion."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib

import httpx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from oprun.cli._common import State
from oprun.cli.main import OprunGroup, app, hoist_global_options
from oprun.sdk._config import config_path

from ._sdk_stub import NOW, Stub, error, ok

PROJECT = {"id": "prj_1", "name": "media", "created_at": NOW}


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("OPRUN_URL", "OPRUN_TOKEN", "OPRUN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "xdg"


def run(stub: Stub, *args: str, stdin: str | None = None):
    state = State(client_factory=lambda u, t: stub.client())
    return CliRunner().invoke(app, list(args), obj=state, input=stdin)


# -- global options and the commands' own ----------------------------------------------
def test_a_commands_own_url_and_token_are_not_taken_as_global_options():
    args = ["worker", "--app", "m:app", "--url", "http://h", "--token", "t", "-o", "json"]
    group = get_command(app)
    assert isinstance(group, OprunGroup)
    keep = group.own_options(args)
    assert {"--url", "--token"} <= keep
    assert hoist_global_options(args, keep) == ["-o", "json", *args[:-2]]
    assert group.own_options(["--url", "http://h", "ops", "list"]) == frozenset()
    assert hoist_global_options(["ops", "list", "--profile", "prod"]) == [
        "--profile",
        "prod",
        "ops",
        "list",
    ]
    assert hoist_global_options(["ops", "list", "--profile=prod"])[0] == "--profile=prod"


# -- login -------------------------------------------------------------------------------
def test_login_checks_the_token_then_writes_the_profile_0600(xdg):
    stub = Stub().on("GET", "/v1/projects/current", ok(PROJECT))
    result = run(
        stub, "login", "--url", "http://oprun.test/", "--token", "s3cret", "--profile", "p1"
    )
    assert result.exit_code == 0, result.stderr
    assert "logged in to http://oprun.test (project media, prj_1)" in result.stdout
    assert "s3cret" not in result.stdout
    path = config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {
        "p1": {"url": "http://oprun.test", "token": "s3cret"}
    }


def test_login_reads_the_token_from_standard_input_and_prints_json(xdg):
    stub = Stub().on("GET", "/v1/projects/current", ok(PROJECT))
    result = run(stub, "-o", "json", "login", "--url", "http://oprun.test", stdin="piped\n")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["profile"], shown["project"]["id"]) == ("default", "prj_1")
    assert tomllib.loads(config_path().read_text())["default"]["token"] == "piped"


def test_login_with_a_refused_token_writes_nothing(xdg):
    stub = Stub().on("GET", "/v1/projects/current", error("UNAUTHENTICATED", 401, "bad token"))
    result = run(stub, "login", "--url", "http://oprun.test", "--token", "wrong")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: UNAUTHENTICATED: bad token"
    assert not config_path().exists()


def test_login_with_a_bad_profile_name_is_a_usage_error(xdg):
    result = run(Stub(), "login", "--url", "http://x", "--token", "t", "--profile", "a b")
    assert result.exit_code == 2
    assert "profile name" in result.stderr


# -- events ------------------------------------------------------------------------------
def _event(seq: int, status: str) -> str:
    body = {
        "id": seq,
        "project_id": "prj_1",
        "type": "operation.status",
        "entity_id": "op_1",
        "at": NOW,
        "data": {"status": status},
    }
    return f"id: {seq}\ndata: {json.dumps(body)}\n\n"


def test_events_prints_one_line_per_event_and_stops_at_max():
    stream = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        text="retry: 10\n\n" + _event(1, "RUNNING") + _event(2, "SUCCEEDED"),
    )
    stub = Stub().on("GET", "/v1/events", stream)
    result = run(stub, "events", "--after", "0", "--max", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert "operation.status  op_1" in lines[1] and '{"status":"SUCCEEDED"}' in lines[1]
    assert stub.requests[0].url.params["after"] == "0"

    stub = Stub().on("GET", "/v1/events", stream)
    result = run(stub, "-o", "json", "events", "--type", "operation.status", "--max", "1")
    assert json.loads(result.stdout)["id"] == 1


# -- help and completion ------------------------------------------------------------------
def _commands(group, path=("oprun",)):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_command_shows_an_example_in_its_help():
    missing = [
        path
        for path, command in _commands(get_command(app))
        if "Example:" not in (command.help or "")
    ]
    assert missing == []
    assert "Example:" in (get_command(app).help or "")


def test_shell_completion_scripts_and_completions_work():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPRUN_", "_OPRUN"))}
    shown = subprocess.run(
        [sys.executable, "-m", "oprun", "--show-completion", "bash"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_oprun_completion" in shown.stdout and "complete " in shown.stdout
    completed = subprocess.run(
        [sys.executable, "-m", "oprun"],
        env={
            **env,
            "_OPRUN_COMPLETE": "complete_bash",
            "COMP_WORDS": "oprun ops l",
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.stdout.split() == ["list", "logs"]
