"""What every CLI command shares: the global options' state, output, and exit codes."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console

from oprun.domain.errors import OprunError
from oprun.sdk import Client
from oprun.sdk._requests import parse_json_value

EXIT_OK = 0
EXIT_ERROR = 1
"""Any failure, and an operation that ended FAILED."""
EXIT_USAGE = 2
"""Bad command line or a request the server refused as invalid."""
EXIT_CANCELED = 3
"""The operation waited for ended CANCELED."""
EXIT_TIMEOUT = 4
"""The operation waited for was not done before ``--timeout``."""
EXIT_INTERRUPTED = 130

PIPE_WIDTH = 240
"""Width of table output when standard output is not a terminal."""


class Output(enum.StrEnum):
    """How results are printed."""

    TABLE = "table"
    JSON = "json"


ClientFactory = Callable[[str | None, str | None], Client]


@dataclass
class State:
    """The global options, shared by every command through ``ctx.obj``.

    Tests may pass their own ``State(client_factory=...)`` as ``obj`` to reach a
    stub server.
    """

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    profile: str | None = None
    output: Output = Output.TABLE
    debug: bool = False
    client_factory: ClientFactory | None = None
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The client for this invocation of the CLI, made on first use.

        Its url and token come from ``--url`` / ``--token``, ``--profile``, the
        environment or the profile file, in the order `oprun.Client` documents.
        """
        if self._client is None:
            if self.client_factory is not None:
                self._client = self.client_factory(self.url, self.token)
            else:
                self._client = Client(self.url, self.token, profile=self.profile)
        return self._client

    def close(self) -> None:
        """Close the client, if one was made."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def json(self) -> bool:
        """Whether output is JSON."""
        return self.output is Output.JSON


def state(ctx: typer.Context) -> State:
    """The shared state of this invocation."""
    return ctx.ensure_object(State)


def stdout() -> Console:
    """A console on (the current) standard output; markup and highlighting off.

    Piped output is not cut to 80 columns: ids and names stay whole for scripts.
    """
    console = Console(highlight=False, markup=False, emoji=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    """A console on standard error (progress bars)."""
    return Console(stderr=True, highlight=False, markup=False, emoji=False)


def print_json(data: Any) -> None:
    """Print data as indented JSON on standard output."""
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def error_line(message: str) -> None:
    """Print one error line on standard error: ``error: CODE: message``."""
    text = " ".join(message.split())
    typer.echo(f"error: {text}", err=True)


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs as parameters; JSON objects and arrays are decoded.

    Other values stay strings: the server coerces them to the parameter's type.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="'-p'")
        try:
            params[key] = parse_json_value(value)
        except OprunError as exc:
            raise typer.BadParameter(f"{key}: {exc}", param_hint="'-p'") from None
    return params


def is_terminal() -> bool:
    """Whether standard error is a terminal (progress bars are drawn only there)."""
    return sys.stderr.isatty()
