"""Waiting for an operation from the CLI: a live progress bar and outcome exit codes."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from oprun.cli._common import (
    EXIT_CANCELED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    State,
    error_line,
    is_terminal,
    print_json,
    stderr,
    stdout,
)
from oprun.cli._render import outcome_line
from oprun.domain.status import OperationStatus
from oprun.sdk import Client, Operation

BAR_REFRESH_SECONDS = 1.0
"""Longest server-side wait per bar update; the long poll answers at once when done."""


def exit_code(op: Operation) -> int:
    """The exit code for how an operation ended: 0 succeeded, 1 failed, 3 canceled."""
    if op.status is OperationStatus.SUCCEEDED:
        return EXIT_OK
    if op.status is OperationStatus.CANCELED:
        return EXIT_CANCELED
    return EXIT_ERROR


def wait_with_bar(
    client: Client, op: Operation, timeout: float | None, console: Console
) -> Operation:
    """Wait for `op` to end, drawing percent, step code and message as they change.

    Raises:
        TimeoutError: not done after `timeout` seconds.
    """
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[step]}", style="cyan"),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
    )
    last = op
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"{op.id} {op.kind}", total=None, step="", message="")
        for last in client.operations.watch(op.id, every=BAR_REFRESH_SECONDS, timeout=timeout):
            pct = last.progress.percent
            if last.status is OperationStatus.SUCCEEDED:
                pct = 100.0
            progress.update(
                bar,
                total=None if pct is None else 100.0,
                completed=pct or 0.0,
                step=last.step_code or last.state,
                message=last.progress.message or "",
            )
    return last


def follow(state: State, op: Operation, timeout: float | None) -> int:
    """Wait for `op` to end, print how it ended, and return the exit code for it."""
    client = state.client()
    try:
        if op.done:
            final = op
        elif not state.json and is_terminal():
            final = wait_with_bar(client, op, timeout, stderr())
        else:
            final = client.operations.wait(op.id, timeout)
    except TimeoutError:
        latest = client.operations.get(op.id)
        if state.json:
            print_json(latest.to_dict())
        error_line(
            f"TIMEOUT: operation {op.id} is still {latest.state} after {timeout:g}s "
            f"(it keeps running; 'oprun ops wait {op.id}' to wait again)"
        )
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        error_line(
            f"INTERRUPTED: stopped waiting; operation {op.id} keeps running "
            f"('oprun ops cancel {op.id}' cancels it)"
        )
        return EXIT_INTERRUPTED
    if state.json:
        print_json(final.to_dict())
    else:
        out = stdout()
        out.print(outcome_line(final))
        if final.result is not None:
            out.print_json(data=final.result, highlight=False)
    if final.status is OperationStatus.FAILED:
        reason = f": {final.error.code}: {final.error.message}" if final.error else ""
        error_line(f"FAILED: operation {final.id} ({final.kind}) failed{reason}")
    elif final.status is OperationStatus.CANCELED:
        error_line(f"CANCELED: operation {final.id} ({final.kind}) was canceled")
    return exit_code(final)
