"""The README's five-minute tour, run as written: its commands, from a fresh directory.

The code and the command lines come from README.md itself, so this test breaks when
the tour does. Every command runs the installed `oprun` console script (the one next
to this interpreter, as `.venv/bin/oprun` is in the README), from a new directory that
holds only `media.py`, with no PYTHONPATH and no OPRUN_* variable of the test run: only
the two the `export` line printed by `oprun up` sets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from oprun.testing import free_port
from tests.e2e.conftest import ROOT, Ran

README = ROOT / "README.md"
OPRUN = Path(sys.executable).parent / "oprun"
"""The installed console script, as `.venv/bin/oprun` in the README."""
SCRIPT_PREFIX = ".venv/bin/oprun"
START_SECONDS = 60.0
EXPORT_LINE = re.compile(r"export (OPRUN_URL=\S+) (OPRUN_TOKEN=\S+)")
OPERATION_ID = re.compile(r"\bop_[0-9A-Za-z]+\b")


@dataclass(frozen=True)
class Tour:
    """What the README's tour shows, read from README.md."""

    media: str
    """The code of `media.py`."""
    more_options: str
    """The example of an action's retry, requirements and quarantine options."""
    client_snippet: str
    """The Python that invokes `resize` and waits for it."""
    commands: tuple[tuple[str, ...], ...]
    """Every `.venv/bin/oprun ...` line of its shell blocks, split as a shell would."""

    def command(self, *start: str) -> tuple[str, ...]:
        """The one command whose arguments begin with `start`."""
        found = [c for c in self.commands if c[1 : 1 + len(start)] == start]
        assert len(found) == 1, f"the tour has {len(found)} 'oprun {' '.join(start)}' commands"
        return found[0]


def read_tour() -> Tour:
    """The tour's code blocks and command lines, from README.md."""
    text = README.read_text()
    section = re.search(r"^## A five-minute tour\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert section is not None, "README.md has no '## A five-minute tour' section"
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section.group(1), re.DOTALL | re.MULTILINE)
    python = [code for lang, code in blocks if lang == "python"]
    commands = tuple(
        tuple(shlex.split(line, comments=True))
        for lang, code in blocks
        if lang == "bash"
        for line in code.splitlines()
        if line.startswith(SCRIPT_PREFIX + " ")
    )

    def one(marker: str) -> str:
        found = [code for code in python if marker in code]
        assert len(found) == 1, f"the tour has {len(found)} python blocks with {marker!r}"
        return found[0]

    return Tour(
        media=one('App("media")'),
        more_options=one("quarantine_after"),
        client_snippet=one("oprun.Client()"),
        commands=commands,
    )


TOUR = read_tour()


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHONPATH and any OPRUN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPRUN_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Up:
    """An `oprun up` started as the tour says, and the variables its export line sets."""

    process: subprocess.Popen[bytes]
    exported: dict[str, str]
    home: Path
    """The tour's fresh directory, holding only media.py (and what the tests write)."""

    @property
    def url(self) -> str:
        return self.exported["OPRUN_URL"]

    @property
    def token(self) -> str:
        return self.exported["OPRUN_TOKEN"]

    def env(self) -> dict[str, str]:
        """The environment of the tour's second terminal: the export line, nothing else."""
        return base_env(XDG_CONFIG_HOME=str(self.home.parent / "config"), **self.exported)

    def run(self, command: tuple[str, ...], timeout: float = 90) -> Ran:
        """Run one of the tour's `.venv/bin/oprun` lines from the tour's directory."""
        assert command[0] == SCRIPT_PREFIX, command
        done = subprocess.run(
            [str(OPRUN), *command[1:]],
            env=self.env(),
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Ran(tuple(command[1:]), done.returncode, done.stdout, done.stderr)

    def get(self, path: str) -> dict[str, object]:
        """A GET of the API as the admin, for what the tour's commands leave unsaid."""
        headers = {"Authorization": f"Bearer {self.token}"}
        response = httpx.get(f"{self.url}{path}", headers=headers, timeout=10)
        response.raise_for_status()
        body: dict[str, object] = response.json()
        return body


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (as Ctrl-C in the tour's terminal would), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_line(log: Path, pattern: re.Pattern[str], process: subprocess.Popen[bytes]) -> str:
    """The first line of `log` that matches `pattern`; fail if `process` exits first."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        found = pattern.search(text)
        if found:
            return found.group(0)
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before printing it:\n{text}")
        time.sleep(0.1)
    pytest.fail(f"no line matching {pattern.pattern!r} within {START_SECONDS} s")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`oprun up` as in the tour's first terminal, on a data directory and port of its own.

    It runs from the tour's directory, as every `.venv/bin/oprun` line of the tour does:
    its built-in worker serves the default queue too, so it may be the one that claims
    a `resize` task, and must then import media.py as well.
    """
    root = tmp_path_factory.mktemp("tour")
    home = root / "tour"
    home.mkdir()
    (home / "media.py").write_text(TOUR.media)
    data = root / "data"
    log = root / "up.log"
    command = TOUR.command("up")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(OPRUN), *command[1:], "--port", str(free_port())],
            env=base_env(OPRUN_DATA_DIR=str(data), XDG_CONFIG_HOME=str(root / "config")),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        line = wait_for_line(log, EXPORT_LINE, process)
        exported = dict(item.split("=", 1) for item in line.split()[1:])
        yield Up(process, exported, home)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def worker(up: Up) -> Iterator[subprocess.Popen[bytes]]:
    """The tour's `oprun worker --app media:app`, run from the directory holding media.py."""
    command = TOUR.command("worker")
    assert "media:app" in command
    log = up.home.parent / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(OPRUN), *command[1:]],
            env=up.env(),
            cwd=up.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while "resize" not in {a["name"] for a in up.get("/v1/actions")["items"]}:  # type: ignore[union-attr, index]
            if process.poll() is not None:
                pytest.fail(
                    f"'oprun {' '.join(command[1:])}' exited with {process.returncode}:\n"
                    f"{log.read_text()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"the tour's worker did not register resize:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


@pytest.fixture(scope="module")
def resized(up: Up, worker: subprocess.Popen[bytes]) -> Ran:
    """The tour's `oprun invoke resize -p width=640 --wait`."""
    return up.run(TOUR.command("invoke", "resize"))


def test_the_tour_worker_runs_resize_from_the_directory_of_media_py(resized: Ran) -> None:
    assert resized.returncode == 0, resized
    assert "SUCCEEDED" in resized.stdout, resized
    result = json.loads(resized.stdout[resized.stdout.index("{") :])
    assert result == {"width": 640, "height": 480}  # what media.py's resize returns


def test_the_tour_python_snippet_invokes_waits_and_reads_the_logs(
    up: Up, worker: subprocess.Popen[bytes]
) -> None:
    script = up.home / "snippet.py"
    script.write_text(TOUR.client_snippet)
    done = subprocess.run(
        [sys.executable, script.name],
        env=up.env(),
        cwd=up.home,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    first, *logs = done.stdout.splitlines()
    assert "SUCCEEDED" in first and "PROCESSING" in first and "100" in first, first
    assert "{'width': 640, 'height': 480}" in first, first
    assert [line for line in logs if "resized batch" in line] == [
        f"resized batch {i}" for i in range(10)
    ], done.stdout


def test_the_tour_options_example_defines_an_action(up: Up) -> None:
    # The fragment continues media.py (it decorates with its `app`).
    namespace: dict[str, object] = {"__name__": "media_with_options"}
    exec(compile(TOUR.media + "\n" + TOUR.more_options, "README.md", "exec"), namespace)
    definition = namespace["app"].get("transcode")  # type: ignore[attr-defined]
    assert definition.max_attempts == 5 and definition.retry.retry_on == ["CRASHED", "EXCEPTION"]
    assert definition.requirements.gpus == 1 and definition.quarantine_after == 3


def test_the_tour_cancel_and_logs_commands(up: Up, worker: subprocess.Popen[bytes]) -> None:
    invoked = up.run(TOUR.command("invoke", "sleep"))
    assert invoked.returncode == 0, invoked
    found = OPERATION_ID.search(invoked.stdout)
    assert found, invoked
    op_id = found.group(0)
    deadline = time.monotonic() + 30
    while up.get(f"/v1/operations/{op_id}")["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the sleep operation did not start within 30 s"
        time.sleep(0.1)

    def with_id(command: tuple[str, ...]) -> tuple[str, ...]:
        assert "op_..." in command, command
        return tuple(op_id if arg == "op_..." else arg for arg in command)

    canceled = up.run(with_id(TOUR.command("ops", "cancel")))
    assert canceled.returncode == 0, canceled
    assert op_id in canceled.stdout, canceled
    followed = up.run(with_id(TOUR.command("ops", "logs")), timeout=60)
    assert followed.returncode == 0, followed  # -f returns once the operation has ended
    assert up.get(f"/v1/operations/{op_id}")["status"] == "CANCELED"


def test_the_tour_lists_the_succeeded_resize(up: Up, resized: Ran) -> None:
    found = OPERATION_ID.search(resized.stdout)
    assert found, resized
    listed = up.run(TOUR.command("ops", "list"))
    assert listed.returncode == 0, listed
    assert found.group(0) in listed.stdout, listed
