"""``oprun queues ...``: the queues work waits in, their priority and concurrency limit."""

from __future__ import annotations

from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import queue_line, queues_table

app = typer.Typer(
    help="Show queues and set their priority and concurrency limit.\n\n"
    "Example: oprun queues set render --priority 10 --max-concurrency 4",
    no_args_is_help=True,
)


@app.command("list")
def list_queues(ctx: typer.Context) -> None:
    """List queues, highest priority first: settings, work waiting and running, the last hour.

    Example: oprun queues list -o json
    """
    st = state(ctx)
    queues = st.client().queues.list()
    if st.json:
        print_json([q.model_dump(mode="json") for q in queues])
    else:
        stdout().print(queues_table(queues))


@app.command("set")
def set_queue(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The queue's name.", show_default=False)
    ],
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority",
            min=-1000,
            max=1000,
            help="Higher-priority queues are served first (default: unchanged, 0 if new).",
            show_default=False,
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            "--max-concurrency",
            min=1,
            help="Most of its tasks running at once (default: unchanged, no limit if new).",
            show_default=False,
        ),
    ] = None,
    no_limit: Annotated[
        bool, typer.Option("--no-limit", help="Remove its concurrency limit.")
    ] = False,
) -> None:
    """Set a queue's priority and concurrency limit, creating the queue if new (admin).

    A setting not given keeps its current value.

    Example: oprun queues set render --priority 10 --max-concurrency 4
    """
    if no_limit and max_concurrency is not None:
        raise typer.BadParameter(
            "give --max-concurrency N or --no-limit, not both", param_hint="'--no-limit'"
        )
    st = state(ctx)
    client = st.client()
    current = None
    if priority is None or (max_concurrency is None and not no_limit):
        current = next((q for q in client.queues.list() if q.name == name), None)
    if priority is None:
        priority = current.priority if current else 0
    if not no_limit and max_concurrency is None and current is not None:
        max_concurrency = current.max_concurrency
    queue = client.queues.configure(name, priority, max_concurrency)
    if st.json:
        print_json(queue.model_dump(mode="json"))
    else:
        stdout().print(queue_line(queue))
