"""The real `oprun` command with profiles, `login`, `events`, and more exit codes.

One server and worker (SQLite) serve the module; each CLI run is a subprocess
whose environment holds no OPRUN_* variable unless the test sets one.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, Ran, clean_env
from tests.integration._live import Live, live


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Live]:
    with live(tmp_path_factory.mktemp("cli")) as running:
        yield running


def oprun(*args: str, config: Path, stdin: str = "", **variables: str) -> Ran:
    """`python -m oprun ARGS` with XDG_CONFIG_HOME=`config` and only the given OPRUN_* vars."""
    done = subprocess.run(
        [sys.executable, "-m", "oprun", *args],
        env=clean_env(XDG_CONFIG_HOME=str(config), **variables),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Ran(tuple(args), done.returncode, done.stdout, done.stderr)


def one_error(ran: Ran, code: str) -> str:
    assert "Traceback" not in ran.stderr, ran
    lines = ran.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), ran
    return lines[0]


def test_login_writes_a_profile_that_later_commands_use(env: Live, tmp_path: Path) -> None:
    config = tmp_path / "xdg"
    ran = oprun("login", "--url", env.url, "--token", env.token, "--profile", "dev", config=config)
    assert ran.returncode == 0, ran
    assert ran.stdout.startswith(f"logged in to {env.url} (project "), ran
    assert env.token not in ran.stdout + ran.stderr
    path = config / "oprun" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"dev": {"url": env.url, "token": env.token}}

    by_option = oprun("--profile", "dev", "-o", "json", "workers", "list", config=config)
    assert by_option.returncode == 0, by_option
    assert json.loads(by_option.stdout), by_option
    after_command = oprun("actions", "list", "--profile", "dev", config=config)
    assert after_command.returncode == 0 and "echo" in after_command.stdout, after_command
    by_variable = oprun("tokens", "list", config=config, OPRUN_PROFILE="dev")
    assert by_variable.returncode == 0, by_variable

    # The token comes on standard input too, and [default] needs no --profile.
    piped = oprun("login", "--url", env.url, config=config, stdin=env.token + "\n")
    assert piped.returncode == 0, piped
    assert oprun("ops", "list", config=config).returncode == 0


def test_login_with_a_wrong_token_exits_1_and_writes_nothing(env: Live, tmp_path: Path) -> None:
    config = tmp_path / "xdg"
    ran = oprun("login", "--url", env.url, "--token", "oprun_wrong", config=config)
    assert ran.returncode == 1, ran
    one_error(ran, "UNAUTHENTICATED")
    assert "oprun_wrong" not in ran.stderr
    assert not (config / "oprun" / "config.toml").exists()


def test_a_missing_profile_exits_2_naming_the_fix(tmp_path: Path) -> None:
    ran = oprun("--profile", "nope", "ops", "list", config=tmp_path / "xdg")
    assert ran.returncode == 2, ran
    assert "oprun login --profile nope" in one_error(ran, "VALIDATION")


def test_events_prints_an_operations_events_as_json_lines(env: Live, tmp_path: Path) -> None:
    variables = {"OPRUN_URL": env.url, "OPRUN_TOKEN": env.token}
    invoked = oprun(
        "-o", "json", "invoke", "echo", "-p", "value=1", "--wait", config=tmp_path, **variables
    )
    assert invoked.returncode == 0, invoked
    op_id = json.loads(invoked.stdout)["id"]
    ran = oprun(
        "-o", "json", "events", "--after", "0", "--entity", op_id, "--type", "operation.status",
        "--max", "2", config=tmp_path, **variables,
    )  # fmt: skip
    assert ran.returncode == 0, ran
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(events) == 2 and {e["entity_id"] for e in events} == {op_id}
    assert events[0]["id"] < events[1]["id"]


def test_conflict_and_access_denied_exit_1_with_one_line(env: Live, tmp_path: Path) -> None:
    admin = {"OPRUN_URL": env.url, "OPRUN_TOKEN": env.token}
    marker = tmp_path / "markers"
    invoked = oprun(
        "-o", "json", "invoke", "once", "-p", f"marker_dir={marker}", "-p", "seconds=30",
        config=tmp_path, **admin,
    )  # fmt: skip
    op_id = json.loads(invoked.stdout)["id"]
    try:
        conflict = oprun("ops", "delete", op_id, config=tmp_path, **admin)
        assert conflict.returncode == 1, conflict
        one_error(conflict, "CONFLICT")
    finally:
        httpx.post(
            f"{env.url}/v1/operations/{op_id}:cancel",
            headers={"Authorization": f"Bearer {env.token}"},
        ).raise_for_status()
    viewer = json.loads(
        oprun(
            "-o", "json", "tokens", "create", "v", "--role", "viewer", config=tmp_path, **admin
        ).stdout
    )
    denied = oprun(
        "invoke", "echo", config=tmp_path, OPRUN_URL=env.url, OPRUN_TOKEN=viewer["secret"]
    )
    assert denied.returncode == 1, denied
    one_error(denied, "ACCESS_DENIED")
