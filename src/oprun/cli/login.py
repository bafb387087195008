"""``oprun login``: check a token against a server, then save both as a profile."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from oprun.cli._common import print_json, state, stdout
from oprun.sdk import Client
from oprun.sdk._config import (
    DEFAULT_PROFILE,
    DEFAULT_URL,
    PROFILE_ENV,
    TOKEN_ENV,
    URL_ENV,
    check_profile_name,
    save_profile,
)


def _read_token() -> str:
    """A token typed at a hidden prompt, or the first line piped to standard input."""
    if sys.stdin.isatty():
        return str(typer.prompt("token", hide_input=True)).strip()
    return sys.stdin.readline().strip()


def login(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help=f"The server (else {URL_ENV}, else {DEFAULT_URL}).", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help=f"The token (else {TOKEN_ENV}, else asked for, or read from standard input).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help=f"The profile to write (else {PROFILE_ENV}, else default).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a token against a server, then save both as a profile.

    The profile file is $XDG_CONFIG_HOME/oprun/config.toml (~/.config/oprun/config.toml), mode 0600; other profiles in it are kept. Nothing is written when the server refuses the token.

    Example: oprun login --url https://oprun.example.com --token oprun_... --profile prod
    """
    st = state(ctx)
    url = url or st.url or os.environ.get(URL_ENV) or DEFAULT_URL
    token = token or st.token or os.environ.get(TOKEN_ENV) or _read_token()
    if not token:
        raise typer.BadParameter("a token is required", param_hint="'--token'")
    name = check_profile_name(
        profile or st.profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    )
    factory = st.client_factory or (lambda u, t: Client(u, t))
    client = factory(url, token)
    try:
        project = client.projects.current()
        base = client.url
    finally:
        client.close()
    path = save_profile(name, base, token)
    if st.json:
        print_json(
            {
                "profile": name,
                "url": base,
                "project": project.model_dump(mode="json"),
                "path": str(path),
            }
        )
    else:
        stdout().print(
            f"logged in to {base} (project {project.name}, {project.id}); "
            f"saved as profile {name} in {path}"
        )
