"""`oprun up`, `oprun server`, `oprun worker` and `oprun db upgrade`: the long-running commands."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oprun.cli.db import register as register_db
from oprun.startup import settle_startup_objects

if TYPE_CHECKING:
    from oprun.app import App

DEFAULT_PORT = 8710
TOKEN_FILE = "admin-token"
REGISTER_WAIT_SECONDS = 10.0
"""How long `up` waits for its worker to register before it prints that it is up."""


def _write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner alone (0600) from its first byte, never after."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file left by an earlier start keeps no wider mode
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _load_app(spec: str) -> App:
    """The `--app` option's `App` (see `oprun.app.load_app`), or a usage error saying why not."""
    from oprun.app import load_app

    try:
        return load_app(spec)
    except (ImportError, LookupError, TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--app") from exc


class LogFormat(enum.StrEnum):
    """How the long-running commands write their log lines (see `oprun.logs`)."""

    TEXT = "text"
    JSON = "json"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="OPRUN_LOG_FORMAT",
        case_sensitive=False,
        help="Log lines as readable key=value (text) or JSON objects, one a line (json).",
    ),
]


def _logging(verbose: bool, log_format: LogFormat, *, access_log: bool = False) -> None:
    """One logging setup for the long-running commands: `oprun.logs.configure`."""
    from oprun.logs import configure

    configure(log_format.value, verbose=verbose, access_log=access_log)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, as uvicorn's own runner would.

    uvicorn picks uvloop by default (`loop="auto"`), but only when it makes the loop
    itself; `oprun server` makes its own, to handle signals beside uvicorn. On uvloop a
    request costs the server 5 to 8 % less CPU (two servers over one database, requests
    interleaved). uvicorn[standard] installs uvloop where it runs (not on Windows);
    elsewhere asyncio's own loop serves.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _run_until_signalled(
    server: Any,
    agent: Any | None,
    on_started: Callable[[], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Serve (and work) until SIGINT/SIGTERM; then drain the worker and stop the server.

    `on_started` runs once the server accepts connections and the worker, if any, has
    registered its actions (or stopped trying): from then on they can be invoked.
    `on_stopping` runs before the server stops: it answers the long polls in flight.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server.install_signal_handlers = lambda: None
    serving = asyncio.create_task(server.serve())
    # uvicorn exposes only a flag for "started"; poll it briefly.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    working = asyncio.create_task(agent.run()) if agent is not None else None
    if agent is not None and working is not None:
        deadline = loop.time() + REGISTER_WAIT_SECONDS
        while (  # noqa: ASYNC110
            agent.worker_id is None
            and not working.done()
            and not stop.is_set()
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.02)
    if server.started:
        settle_startup_objects()
        if on_started is not None:
            on_started()
    waiting = asyncio.create_task(stop.wait())
    watched = {serving, waiting} | ({working} if working else set())
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    if agent is not None and working is not None:
        agent.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await working
    if on_stopping is not None:
        on_stopping()
    server.should_exit = True
    await serving
    waiting.cancel()


def register(app: typer.Typer) -> None:
    """Add the server-side commands to the CLI."""
    db = typer.Typer(help="Database maintenance.", no_args_is_help=True)
    app.add_typer(db, name="db")
    register_db(db)

    @app.command()
    def up(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
        data_dir: Annotated[
            Path | None, typer.Option(help="Where the SQLite file and admin token live.")
        ] = None,
        worker_app: Annotated[
            str, typer.Option("--app", help="Actions the built-in worker serves (MODULE:APP).")
        ] = "oprun.examples:app",
        concurrency: Annotated[
            int, typer.Option(help="Tasks the built-in worker runs at once.")
        ] = 4,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
        log_format: LogFormatOption = LogFormat.TEXT,
    ) -> None:
        """Run the API server, a worker and the web UI in one process, on SQLite by default.

        Example: oprun up --port 8710 --app mymodule:app
        """
        _logging(verbose, log_format)
        from oprun.server import open_services, uvicorn_server
        from oprun.service.settings import Settings, default_data_dir
        from oprun.worker import WorkerAgent

        folder = (data_dir or default_data_dir()).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        url = os.environ.get("OPRUN_DATABASE_URL") or f"sqlite:///{folder / 'oprun.db'}"
        actions = _load_app(worker_app)
        services, made = open_services(Settings.load(database_url=url))
        token_path = folder / TOKEN_FILE
        if made is not None:
            _write_private(token_path, made.secret + "\n")
        secret = (
            made.secret
            if made
            else (token_path.read_text().strip() if token_path.exists() else None)
        )
        base = f"http://{host}:{port}"
        known = secret

        def banner() -> None:
            # Printed once the server listens: whoever reads it may connect at once.
            typer.echo(f"oprun is up at {base}  (API {base}/v1, docs {base}/docs)")
            typer.echo(f"database: {url}")
            if known:
                typer.echo(f"admin token: {known}  (kept in {token_path})")
                typer.echo(f"  export OPRUN_URL={base} OPRUN_TOKEN={known}")
            else:
                typer.echo("admin token: created earlier and not on this machine; set OPRUN_TOKEN")

        if not secret:
            secret = os.environ.get("OPRUN_TOKEN") or os.environ.get("OPRUN_BOOTSTRAP_TOKEN")
        server = uvicorn_server(services, host, port)
        agent = None
        if secret:
            agent = WorkerAgent(
                base, secret, actions, name=f"{socket.gethostname()}-up", concurrency=concurrency
            )
        try:
            # asyncio's own loop, not uvloop's: the worker agent beside the server reaps its
            # children itself, which libuv's own child watching does not share (its tasks
            # never finished on uvloop).
            asyncio.run(_run_until_signalled(server, agent, banner, services.shutdown))
        finally:
            services.close()

    @app.command()
    def server(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
        database_url: Annotated[
            str | None,
            typer.Option(help="sqlite:///path or postgresql://... (env OPRUN_DATABASE_URL)."),
        ] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
        log_format: LogFormatOption = LogFormat.TEXT,
    ) -> None:
        """Run the API server alone (stateless: run several over one PostgreSQL).

        Example: OPRUN_DATABASE_URL=postgresql://db/oprun oprun server --host 0.0.0.0
        """
        _logging(verbose, log_format, access_log=True)
        from oprun.server import open_services, uvicorn_server
        from oprun.service.settings import Settings

        settings = Settings.load(database_url=database_url) if database_url else Settings.load()
        services, made = open_services(settings)
        if made is not None and not settings.bootstrap_token:
            typer.echo(f"admin token: {made.secret}  (shown once; store it now)")
        try:
            run_event_loop(
                _run_until_signalled(
                    uvicorn_server(services, host, port),
                    None,
                    lambda: typer.echo(f"oprun server at http://{host}:{port}"),
                    services.shutdown,
                )
            )
        finally:
            services.close()

    @app.command()
    def worker(
        worker_app: Annotated[
            str, typer.Option("--app", help="The actions this worker serves (MODULE:APP).")
        ],
        url: Annotated[
            str | None,
            typer.Option(
                envvar="OPRUN_URL",
                help="Server URL; several API processes comma-separated, to fail over between.",
            ),
        ] = None,
        token: Annotated[
            str | None, typer.Option(envvar="OPRUN_TOKEN", help="A worker or admin token.")
        ] = None,
        queue: Annotated[
            list[str] | None, typer.Option("--queue", "-q", help="Queues to serve (repeat).")
        ] = None,
        concurrency: Annotated[int | None, typer.Option(help="Tasks run at once.")] = None,
        prefetch: Annotated[
            int | None,
            typer.Option(
                min=0,
                help="Tasks held beyond --concurrency, waiting for a slot, while tasks are short "
                "(default: 3 per slot, 3 x --concurrency; 0: none).",
            ),
        ] = None,
        name: Annotated[str | None, typer.Option(help="Worker name.")] = None,
        grace: Annotated[float, typer.Option(help="Seconds to finish work on SIGTERM.")] = 10.0,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
        log_format: LogFormatOption = LogFormat.TEXT,
        metrics_port: Annotated[
            int | None,
            typer.Option(
                envvar="OPRUN_WORKER_METRICS_PORT",
                min=0,
                max=65535,
                help="Serve the worker's Prometheus metrics on this port (/metrics).",
            ),
        ] = None,
        metrics_host: Annotated[
            str, typer.Option(help="Address the metrics port listens on.")
        ] = "127.0.0.1",
    ) -> None:
        """Run a worker agent that serves the actions of MODULE:APP.

        Example: oprun worker --app mymodule:app --concurrency 8 --metrics-port 9710
        """
        _logging(verbose, log_format)
        from oprun.worker import run_worker

        if not token:
            raise typer.BadParameter("a token is required (--token or OPRUN_TOKEN)")
        run_worker(
            url or f"http://127.0.0.1:{DEFAULT_PORT}",
            token,
            _load_app(worker_app),
            name=name or socket.gethostname(),
            queues=queue or ["default"],
            concurrency=concurrency or os.cpu_count() or 1,
            prefetch=prefetch,
            grace=grace,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )

    @db.command("upgrade")
    def db_upgrade(
        database_url: Annotated[
            str | None,
            typer.Option(help="sqlite:///path or postgresql://... (env OPRUN_DATABASE_URL)."),
        ] = None,
    ) -> None:
        """Apply every schema migration (the server also does this at start).

        Example: OPRUN_DATABASE_URL=postgresql://db/oprun oprun db upgrade
        """
        from oprun.service import upgrade_database
        from oprun.service.settings import Settings

        url = database_url or Settings.load().database_url
        upgrade_database(url)
        typer.echo(f"database at {url.split('@')[-1]} is up to date")
