"""MkDocs hook: fill the CLI reference page from the `oprun` command itself.

`docs/cli.md` holds the marker below; at build time it is replaced by what
``typer oprun.cli.main utils docs`` writes for every command (usage, arguments,
options, the help text with its example), one heading level below the page's.
So the reference can never drift from the code.
"""

from __future__ import annotations

import functools
import html
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- oprun-cli-reference -->"
ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def reference() -> str:
    """The Markdown reference of every `oprun` command, headings shifted down one level."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPRUN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["TERM"] = "dumb"
    done = subprocess.run(
        [sys.executable, "-m", "typer", "oprun.cli.main", "utils", "docs", "--name", "oprun"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout.split("\n", 1)[1]  # drop "# `oprun`": the page has its own title
    text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)
    return re.sub(  # typer escapes HTML in the text; a code block shows it as written
        r"^Example: (.+)$",
        lambda m: f"**Example**:\n\n```console\n$ {html.unescape(m[1])}\n```",
        text,
        flags=re.MULTILINE,
    )


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the marker of the CLI page with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, "## `oprun`\n" + reference())
