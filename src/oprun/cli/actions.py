"""``oprun actions ...``: list, show and register actions."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import action_detail, actions_table
from oprun.domain import models
from oprun.domain.errors import ValidationError

app = typer.Typer(
    help="List, show and register actions.\n\nExample: oprun actions list",
    no_args_is_help=True,
)


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


def load(target: str) -> Any:
    """The object named by ``module:attribute`` (``module`` alone means ``module:app``).

    The current directory is importable, as it is for ``python -m``.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise ValidationError(f"expected MODULE:APP, got {target!r}", field="target")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"cannot import {module_name!r}: {exc}", field="target") from exc
    obj: Any = module
    for part in (attribute or "app").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValidationError(
                f"module {module_name!r} has no attribute {attribute or 'app'!r}", field="target"
            ) from None
    return obj


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
