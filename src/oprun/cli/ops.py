"""``oprun invoke`` and ``oprun ops ...``: start operations and follow them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from oprun.cli._common import EXIT_OK, parse_params, print_json, state, stdout
from oprun.cli._render import operation_detail, operations_table, outcome_line, tasks_table
from oprun.cli._wait import follow
from oprun.domain.status import OperationStatus
from oprun.sdk import NoOp

app = typer.Typer(
    help="Follow and manage operations.\n\nExample: oprun ops list --status RUNNING",
    no_args_is_help=True,
)

OperationId = Annotated[
    str, typer.Argument(metavar="ID", help="The operation's id (op_...).", show_default=False)
]
WaitTimeout = Annotated[
    float | None,
    typer.Option("--timeout", min=0, help="Stop waiting after this many seconds (exit code 4)."),
]


def invoke(
    ctx: typer.Context,
    action: Annotated[
        str, typer.Argument(metavar="ACTION", help="The action's name.", show_default=False)
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--param",
            metavar="KEY=VALUE",
            help="A parameter value; repeat for more. JSON objects and arrays are decoded.",
        ),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Action version (default: latest).")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Invoking again with the same key returns the same operation."
        ),
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Run on this queue.")] = None,
    run_timeout: Annotated[
        float | None,
        typer.Option("--run-timeout", min=0, help="Seconds the operation itself may take."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for it to end, with a progress bar.")
    ] = False,
    timeout: WaitTimeout = None,
) -> None:
    """Invoke an action.

    With --wait, the exit code says how it ended: 0 succeeded, 1 failed, 3 canceled, 4 still running after --timeout.

    Example: oprun invoke sleep -p seconds=5 --wait --timeout 60
    """
    st = state(ctx)
    op = st.client().operations.invoke(
        action,
        parse_params(param or []),
        version=version,
        idempotency_key=idempotency_key,
        timeout=run_timeout,
        queue=queue,
    )
    if isinstance(op, NoOp):
        if st.json:
            print_json(op.to_dict())
        else:
            stdout().print(f"nothing to do: {action} is up to date (cached result)")
        raise typer.Exit(EXIT_OK)
    if wait:
        raise typer.Exit(follow(st, op, timeout))
    if st.json:
        print_json(op.to_dict())
    else:
        stdout().print(outcome_line(op))


@app.command("list")
def list_operations(
    ctx: typer.Context,
    status: Annotated[
        OperationStatus | None,
        typer.Option("--status", case_sensitive=False, help="Only this status."),
    ] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action.")] = None,
    created_by: Annotated[
        str | None, typer.Option("--created-by", help="Only those invoked by this token name.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 50,
) -> None:
    """List operations, newest first.

    Example: oprun ops list --status FAILED --action resize --limit 20
    """
    st = state(ctx)
    ops = list(
        st.client().operations.list(
            status=status, action=action, created_by=created_by, limit=limit
        )
    )
    if st.json:
        print_json([op.to_dict() for op in ops])
    else:
        stdout().print(operations_table(ops))


@app.command("get")
def get_operation(ctx: typer.Context, operation_id: OperationId) -> None:
    """Show an operation, with its status history.

    Example: oprun ops get op_0192f3c1... -o json
    """
    st = state(ctx)
    op = st.client().operations.get(operation_id)
    if st.json:
        print_json(op.to_dict())
    else:
        stdout().print(operation_detail(op))


@app.command("tasks")
def tasks(
    ctx: typer.Context,
    operation_id: OperationId,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most this many.")
    ] = None,
) -> None:
    """List an operation's tasks, oldest first, with their status and attempts.

    Example: oprun ops tasks op_0192f3c1... --limit 100
    """
    st = state(ctx)
    found = list(st.client().operations.tasks(operation_id, limit=limit))
    if st.json:
        print_json([t.model_dump(mode="json") for t in found])
    else:
        stdout().print(tasks_table(found))


@app.command("wait")
def wait_operation(
    ctx: typer.Context, operation_id: OperationId, timeout: WaitTimeout = None
) -> None:
    """Wait for an operation to end, with a progress bar.

    Exit code: 0 succeeded, 1 failed, 3 canceled, 4 still running after --timeout.

    Example: oprun ops wait op_0192f3c1... --timeout 600
    """
    st = state(ctx)
    op = st.client().operations.get(operation_id)
    raise typer.Exit(follow(st, op, timeout))


@app.command("logs")
def logs(
    ctx: typer.Context,
    operation_id: OperationId,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until it ends.")
    ] = False,
) -> None:
    """Print an operation's log.

    Example: oprun ops logs op_0192f3c1... --follow
    """
    st = state(ctx)
    for record in st.client().operations.logs(operation_id, follow=follow_):
        if st.json:
            typer.echo(json.dumps(record.model_dump(mode="json"), ensure_ascii=False))
        else:
            typer.echo(record.line, err=record.stream == "stderr")


@app.command("cancel")
def cancel(ctx: typer.Context, operation_id: OperationId) -> None:
    """Cancel an operation (queued work never starts; running work is stopped).

    Example: oprun ops cancel op_0192f3c1...
    """
    st = state(ctx)
    op = st.client().operations.cancel(operation_id)
    if st.json:
        print_json(op.to_dict())
    else:
        stdout().print(outcome_line(op))


@app.command("retry")
def retry(ctx: typer.Context, operation_id: OperationId) -> None:
    """Start a new operation with the same action version and parameters.

    Example: oprun ops retry op_0192f3c1...
    """
    st = state(ctx)
    op = st.client().operations.retry(operation_id)
    if st.json:
        print_json(op.to_dict())
    else:
        stdout().print(outcome_line(op))


@app.command("delete")
def delete(ctx: typer.Context, operation_id: OperationId) -> None:
    """Delete a finished operation and its records.

    Example: oprun ops delete op_0192f3c1...
    """
    st = state(ctx)
    st.client().operations.delete(operation_id)
    if st.json:
        print_json({"id": operation_id, "deleted": True})
    else:
        stdout().print(f"deleted {operation_id}")
