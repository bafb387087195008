"""The docs site builds with warnings as errors, and its examples run against a real server.

A fenced ```python block right after a ``<!-- run -->`` line is an example. The
examples of one page run in order, as one script, in a subprocess whose only oprun
settings are OPRUN_URL and OPRUN_TOKEN, against a real server whose worker serves
the example actions of `oprun up` (`oprun.examples`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, clean_env
from tests.integration._live import Live, live

DOCS = ROOT / "docs"
RUN_MARKER = "<!-- run -->"
EXAMPLE = re.compile(r"^<!-- run -->\n```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
SEED_PAGES = sorted((DOCS / "coming-from").glob("*.md"))
PAGES_WITH_EXAMPLES = [DOCS / "getting-started.md", *SEED_PAGES]


def examples(page: Path) -> list[str]:
    """The runnable examples of a page, in order."""
    text = page.read_text()
    found = EXAMPLE.findall(text)
    assert len(found) == text.count(RUN_MARKER), (
        f"{page}: a {RUN_MARKER} is not right before a ```python block"
    )
    return found


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Live]:
    with live(
        tmp_path_factory.mktemp("docs"),
        app="oprun.examples:app",
        actions=frozenset({"sleep", "echo", "fail", "noop"}),
    ) as running:
        yield running


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        env=clean_env(NO_MKDOCS_2_WARNING="1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    cli = (site / "cli" / "index.html").read_text()
    assert "oprun ops wait" in cli and "oprun login" in cli  # generated from the command
    sdk = (site / "sdk" / "index.html").read_text()
    assert "wait_until_done" in sdk and "raise_exception_if" in sdk  # from the docstrings
    assert 'class="mermaid"' in (site / "concepts" / "index.html").read_text()
    for page in SEED_PAGES:
        assert (site / "coming-from" / page.stem / "index.html").exists()


def test_every_seed_has_a_page_with_runnable_examples() -> None:
    assert [p.stem for p in SEED_PAGES] == [
        "datature",
        "deadline-cloud",
        "matrice",
        "roboto",
        "tamr",
    ]
    for page in PAGES_WITH_EXAMPLES:
        assert examples(page), f"{page} has no runnable example"
        for code in examples(page):
            compile(code, str(page), "exec")


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: p.stem)
def test_the_examples_of_a_page_run_against_a_real_server(
    page: Path, env: Live, tmp_path: Path
) -> None:
    script = tmp_path / f"{page.stem}.py"
    script.write_text("\n\n".join(examples(page)))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=clean_env(OPRUN_URL=env.url, OPRUN_TOKEN=env.token),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, f"{page.name}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
