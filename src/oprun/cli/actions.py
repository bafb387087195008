"""``oprun actions ...``: list, show and register actions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from oprun.app import load_object
from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import action_detail, actions_table
from oprun.domain import models
from oprun.domain.errors import ValidationError
from oprun.sdk._endpoints import openjd_definition

app = typer.Typer(
    help="List, show and register actions.\n\nExample: oprun actions list",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The action's name.", show_default=False)]
Queue = Annotated[
    str | None,
    typer.Option("--queue", help="The queue its work waits in (default: default)."),
]
MaxAttempts = Annotated[
    int | None,
    typer.Option("--max-attempts", min=1, max=100, help="Attempts per task (default: 3)."),
]
RetryOn = Annotated[
    list[str] | None,
    typer.Option(
        "--retry-on",
        metavar="CODE",
        help="Run a failed task again when its error code is CODE (EXIT: the command exited "
        "nonzero; '*': any failure) while attempts remain; repeat for more. Without it, a failed "
        "task does not run again (an interrupted one does).",
        show_default=False,
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", min=0, help="Seconds each attempt may run (default: no limit)."),
]


@app.command("list")
def list_actions(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most this many.")
    ] = None,
) -> None:
    """List actions (the latest version of each).

    Example: oprun actions list -o json
    """
    st = state(ctx)
    actions = list(st.client().actions.list(limit=limit))
    if st.json:
        print_json([a.model_dump(mode="json") for a in actions])
    else:
        stdout().print(actions_table(actions))


@app.command("get")
def get_action(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The action's name.", show_default=False)
    ],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="This version (default: latest).")
    ] = None,
) -> None:
    """Show an action version and its parameters.

    Example: oprun actions get resize --version 2
    """
    st = state(ctx)
    action = st.client().actions.get(name, version)
    if st.json:
        print_json(action.model_dump(mode="json"))
    else:
        stdout().print(action_detail(action))


def _retry(retry_on: list[str] | None) -> dict[str, list[str]] | None:
    return {"retry_on": retry_on} if retry_on else None


def _show(ctx: typer.Context, action: models.Action) -> None:
    if state(ctx).json:
        print_json(action.model_dump(mode="json"))
    else:
        stdout().print(action_detail(action))


@app.command("register-template")
def register_template(
    ctx: typer.Context,
    name: Name,
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="An Open Job Description template (YAML or JSON), or a Deadline Cloud job "
            "bundle directory holding template.yaml or template.json.",
            show_default=False,
        ),
    ],
    queue: Queue = None,
    max_attempts: MaxAttempts = None,
    retry_on: RetryOn = None,
    timeout: Timeout = None,
) -> None:
    """Register an Open Job Description job template as an openjd action.

    Its parameters are the template's parameterDefinitions: give them to 'oprun invoke' with -p Name=value. In a job bundle, relative PATH defaults (a scripts directory) are made absolute by joining them to the bundle directory, as 'deadline bundle submit' does; its parameter_values file is not read.

    Example: oprun actions register-template render ./blender_render --queue gpu
    """
    action = (
        state(ctx)
        .client()
        .actions.register_template(
            name,
            path,
            queue=queue,
            max_attempts=max_attempts,
            retry=_retry(retry_on),
            timeout=timeout,
        )
    )
    _show(ctx, action)


@app.command("register-command")
def register_command(
    ctx: typer.Context,
    name: Name,
    argv: Annotated[
        list[str],
        typer.Argument(
            metavar="-- ARGV...",
            help="The command to run and its arguments, after '--'. {{Param.X}} in them "
            "declares a required string parameter X.",
            show_default=False,
        ),
    ],
    queue: Queue = None,
    max_attempts: MaxAttempts = None,
    retry_on: RetryOn = None,
    timeout: Timeout = None,
) -> None:
    """Register a command line as an openjd action (a one-step job template).

    Example: oprun actions register-command greet -- echo hello {{Param.Who}}
    """
    definition = openjd_definition(
        name,
        command=argv,
        queue=queue,
        max_attempts=max_attempts,
        retry=_retry(retry_on),
        timeout=timeout,
    )
    _show(ctx, state(ctx).client().actions.register(definition))


def load(target: str) -> Any:
    """The object named by ``module:attribute`` (``module`` alone means ``module:app``).

    The current directory is importable, as it is for ``python -m`` (`oprun.app.load_object`).
    """
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise ValidationError(f"expected MODULE:APP, got {target!r}", field="target")
    try:
        return load_object(f"{module_name}:{attribute or 'app'}")
    except (ImportError, LookupError) as exc:
        raise ValidationError(str(exc), field="target") from exc


@app.command("register")
def register(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP",
            help="An oprun.App (or an ActionDefinition) to register, e.g. myproject.jobs:app.",
            show_default=False,
        ),
    ],
) -> None:
    """Register the actions of an app: each becomes a new version unless unchanged.

    Example: oprun actions register myproject.jobs:app
    """
    st = state(ctx)
    obj = load(target)
    client = st.client()
    if isinstance(obj, models.ActionDefinition):
        saved = [client.actions.register(obj)]
    elif callable(getattr(obj, "definitions", None)):
        saved = client.actions.register(obj)
    else:
        raise ValidationError(
            f"{target} is a {type(obj).__name__}, not an oprun.App or ActionDefinition",
            field="target",
        )
    if st.json:
        print_json([a.model_dump(mode="json") for a in saved])
    else:
        stdout().print(actions_table(saved))
