"""``oprun tokens ...``: API tokens of the project (needs an admin token)."""

from __future__ import annotations

from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.cli._render import tokens_table
from oprun.domain.roles import Role

app = typer.Typer(
    help="Create, list and revoke API tokens (needs an admin token).\n\n"
    "Example: oprun tokens create ci --role operator",
    no_args_is_help=True,
)


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
) -> None:
    """Create a token; its secret is printed once and never again.

    Example: oprun tokens create ci-deploy --role operator
    """
    st = state(ctx)
    created = st.client().tokens.create(name, role)
    if st.json:
        print_json(created.model_dump(mode="json"))
        return
    out = stdout()
    out.print(tokens_table([created.token]))
    out.print("")
    out.print("secret (shown only now; store it safely):")
    out.print(created.secret)


@app.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """List the project's tokens (never their secrets).

    Example: oprun tokens list
    """
    st = state(ctx)
    tokens = st.client().tokens.list()
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
