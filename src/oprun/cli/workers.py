"""``oprun workers ...``: the registered worker agents."""

from __future__ import annotations

from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import workers_table

app = typer.Typer(help="Show worker agents.\n\nExample: oprun workers list", no_args_is_help=True)


@app.command("list")
def list_workers(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most this many.")
    ] = None,
) -> None:
    """List workers, newest first.

    Example: oprun workers list -o json
    """
    st = state(ctx)
    workers = list(st.client().workers.list(limit=limit))
    if st.json:
        print_json([w.model_dump(mode="json") for w in workers])
    else:
        stdout().print(workers_table(workers))
