"""``oprun tokens ...``: API tokens of the project (needs an admin token)."""

from __future__ import annotations

from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import tokens_table
from oprun.domain.models import TokenCreated
from oprun.domain.roles import Role

app = typer.Typer(
    help="Create, list and revoke API tokens (needs an admin token).\n\n"
    "Example: oprun tokens create ci --role operator",
    no_args_is_help=True,
)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """Seconds in `3600`, `90s`, `30m`, `12h` or `90d`; a usage error otherwise."""
    text = text.strip().lower()
    number, unit = (text[:-1], _UNITS[text[-1]]) if text[-1:] in _UNITS else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise typer.BadParameter(
            f"{text!r} is not a duration: seconds, or a number with s, m, h or d",
            param_hint="--expires-in",
        )
    return seconds


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name for the token.", show_default=False)
    ],
    role: Annotated[
        Role,
        typer.Option(
            "--role", case_sensitive=False, help="What the token may do.", show_default=False
        ),
    ],
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            metavar="DURATION",
            help="Expire after this long: seconds, or a number with s, m, h or d (90d).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a token; its secret is printed once and never again.

    Example: oprun tokens create ci-deploy --role operator --expires-in 90d
    """
    st = state(ctx)
    seconds = None if expires_in is None else duration_seconds(expires_in)
    _show_created(st.json, st.client().tokens.create(name, role, seconds))


def _show_created(as_json: bool, created: TokenCreated) -> None:
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    out = stdout()
    out.print(tokens_table([created.token]))
    out.print("")
    out.print("secret (shown only now; store it safely):")
    out.print(created.secret)


@app.command("list")
def list_tokens(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most this many.")
    ] = None,
) -> None:
    """List the project's tokens, oldest first, revoked ones too (never their secrets).

    Example: oprun tokens list --limit 20
    """
    st = state(ctx)
    tokens = list(st.client().tokens.list(limit=limit))
    if st.json:
        print_json([t.model_dump(mode="json") for t in tokens])
    else:
        stdout().print(tokens_table(tokens))


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token's id (tok_...).", show_default=False)
    ],
) -> None:
    """Revoke a token: it stops working at once.

    Example: oprun tokens revoke tok_0192f3c1...
    """
    st = state(ctx)
    token = st.client().tokens.revoke(token_id)
    if st.json:
        print_json(token.model_dump(mode="json"))
    else:
        stdout().print(f"revoked {token.id} ({token.name})")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token's id (tok_...).", show_default=False)
    ],
) -> None:
    """Replace a token by a new one (same name, role and expiry); the old stops working at once.

    Example: oprun tokens rotate tok_0192f3c1...
    """
    st = state(ctx)
    _show_created(st.json, st.client().tokens.rotate(token_id))
