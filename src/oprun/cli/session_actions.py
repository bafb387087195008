"""``oprun session-actions ...``: every attempt at an operation's work, session by session."""

from __future__ import annotations

from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import session_action_detail, session_actions_table

app = typer.Typer(
    help="Show session actions: what workers ran (env enter, task runs, env exit) and how it "
    "went.\n\nExample: oprun session-actions list --operation op_0192f3c1...",
    no_args_is_help=True,
)


@app.command("list")
def list_session_actions(
    ctx: typer.Context,
    operation: Annotated[
        str | None,
        typer.Option("--operation", metavar="OP_ID", help="Only this operation's (op_...)."),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="SESSION_ID", help="Only this session's (sess_...)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", metavar="TASK_ID", help="Only this task's (task_...)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 200,
) -> None:
    """List session actions of an operation, a session or a task, oldest first.

    Give at least one of --operation, --session, --task; together they narrow the list. The table groups them by session, each in the order it ran.

    Example: oprun session-actions list --operation op_0192f3c1... -o json
    """
    if not (operation or session or task):
        raise typer.BadParameter(
            "give at least one of --operation, --session, --task",
            param_hint="'--operation' / '--session' / '--task'",
        )
    st = state(ctx)
    found = list(
        st.client().session_actions.list(
            operation_id=operation, session_id=session, task_id=task, limit=limit
        )
    )
    if st.json:
        print_json([sa.model_dump(mode="json") for sa in found])
    else:
        stdout().print(session_actions_table(found))


@app.command("get")
def get_session_action(
    ctx: typer.Context,
    session_action_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="The session action's id (sa_...).", show_default=False),
    ],
) -> None:
    """Show a session action, with its definition and status history.

    Example: oprun session-actions get sa_0192f3c1...
    """
    st = state(ctx)
    sa = st.client().session_actions.get(session_action_id)
    if st.json:
        print_json(sa.model_dump(mode="json"))
    else:
        stdout().print(session_action_detail(sa))
