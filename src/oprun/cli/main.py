"""The ``oprun`` command: global options, error handling, and the command tree.

Every failure is one line on standard error (``error: NOT_FOUND: no operation op_x``)
and a nonzero exit code: 2 for a bad command line or a request the server refused
as invalid, 1 for anything else. ``--debug`` shows the traceback instead.

Add commands with ``app.command(...)`` / ``app.add_typer(...)``; server-side
commands (``up``, ``server``, ``worker``, ``db``) come from ``oprun.cli.serve``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_errors
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup

from oprun._version import __version__
from oprun.cli import (
    actions,
    audit,
    events,
    login,
    ops,
    queues,
    session_actions,
    tokens,
    workers,
)
from oprun.cli._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Output,
    State,
    error_line,
)
from oprun.domain.errors import OprunError, ValidationError
from oprun.sdk._config import DEFAULT_URL, PROFILE_ENV, TOKEN_ENV, URL_ENV


class OprunGroup(TyperGroup):
    """The root command: turns every error into one line and an exit code."""

    def invoke(self, ctx: ClickContext) -> Any:
        """Run the command; an `OprunError` or a crash becomes one line (unless --debug)."""
        try:
            return super().invoke(ctx)
        except (click_errors.ClickException, typer.Exit, typer.Abort):
            raise
        except OprunError as exc:
            if _debug(ctx):
                raise
            error_line(f"{exc.code}: {exc.message}")
            raise typer.Exit(
                EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_ERROR
            ) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            error_line(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(EXIT_ERROR) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Parse and run; a usage error is one line too (``error: USAGE: ...``), exit 2."""
        args = list(sys.argv[1:] if args is None else args)
        args = hoist_global_options(args, keep=self.own_options(args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            hint = ""
            if isinstance(exc, click_errors.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            error_line(f"USAGE: {exc.format_message()}{hint}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            error_line("INTERRUPTED: aborted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)

    def own_options(self, args: Sequence[str]) -> frozenset[str]:
        """The option names the command in `args` declares itself (``worker --url``).

        Those are left where they are instead of being taken as global options.
        """
        i = 0
        while i < len(args):
            item = args[i]
            if item == "--":
                return frozenset()
            if item in GLOBAL_OPTIONS_WITH_VALUE:
                i += 2
                continue
            if not item.startswith("-"):
                command = self.commands.get(item)
                if command is None:
                    return frozenset()
                return frozenset(
                    opt for param in command.params for opt in getattr(param, "opts", ())
                )
            i += 1
        return frozenset()


GLOBAL_OPTIONS_WITH_VALUE = ("--url", "--token", "--profile", "--output", "-o")
GLOBAL_FLAGS = ("--debug",)


def hoist_global_options(args: Sequence[str], keep: frozenset[str] = frozenset()) -> list[str]:
    """Move global options given after the command to the front.

    ``oprun ops list -o json`` then means ``oprun -o json ops list``. Nothing after
    ``--`` is moved, nor any option named in `keep` (the command's own options).
    """
    front: list[str] = []
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            rest.extend(items[i:])
            break
        name = item.split("=", 1)[0]
        if name in keep:
            rest.append(item)
        elif item in GLOBAL_FLAGS:
            front.append(item)
        elif item in GLOBAL_OPTIONS_WITH_VALUE and i + 1 < len(items):
            front.extend(items[i : i + 2])
            i += 1
        elif (name.startswith("--") and name in GLOBAL_OPTIONS_WITH_VALUE and "=" in item) or (
            item.startswith("-o") and not item.startswith("--") and len(item) > 2
        ):
            front.append(item)  # --url=X, -oX
        else:
            rest.append(item)
        i += 1
    return front + rest


def _debug(ctx: ClickContext) -> bool:
    obj = ctx.find_object(State)
    return bool(obj and obj.debug)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"oprun {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="oprun",
    cls=OprunGroup,
    help="oprun: define actions, run them on workers, follow every run as an operation."
    "\n\nExample: oprun invoke sleep -p seconds=5 --wait",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold a token
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help=(
                "The oprun server, or several API processes of it, comma-separated (calls "
                f"are spread over them and fail over); else {URL_ENV}, else the profile's, "
                f"else {DEFAULT_URL}."
            ),
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help=f"An API token; else {TOKEN_ENV}, else the profile's.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help=(
                "A profile of ~/.config/oprun/config.toml (see 'oprun login'); it ranks "
                f"above {URL_ENV}/{TOKEN_ENV}. Default: {PROFILE_ENV}, else the default profile."
            ),
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Output, typer.Option("-o", "--output", case_sensitive=False, help="Output format.")
    ] = Output.TABLE,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """oprun: define actions, run them on workers, follow every run as an operation."""
    st = ctx.ensure_object(State)
    ctx.call_on_close(st.close)
    st.url = url
    st.token = token
    st.profile = profile
    st.output = output
    st.debug = debug


app.command("invoke", no_args_is_help=True)(ops.invoke)
app.command("login")(login.login)
app.command("events")(events.events)
app.add_typer(ops.app, name="ops")
app.add_typer(session_actions.app, name="session-actions")
app.add_typer(actions.app, name="actions")
app.add_typer(queues.app, name="queues")
app.add_typer(tokens.app, name="tokens")
app.add_typer(workers.app, name="workers")
app.add_typer(audit.app, name="audit")

# Server-side commands (up, server, worker, db upgrade) live in oprun.cli.serve.
try:
    from oprun.cli.serve import register as _register_serve
except ModuleNotFoundError as _missing:  # pragma: no cover - until serve.py exists
    if _missing.name != "oprun.cli.serve":
        raise
else:
    _register_serve(app)


def run() -> None:
    """Entry point of the ``oprun`` console script."""
    app(prog_name="oprun")
