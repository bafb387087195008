"""Real oprun servers and workers in subprocesses, for tests and benchmarks (yours too)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path.cwd()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPRUN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Server:
    """An `oprun server` subprocess on a free loopback port."""

    database_url: str
    token: str = field(default_factory=lambda: f"oprun_test_{uuid.uuid4().hex}")
    lease_seconds: float = 30.0
    reap_interval: float = 1.0
    worker_silence: float | None = None
    """Seconds without a heartbeat before a worker is NOT_RESPONDING (default: 3 leases)."""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)
    """More settings, as `OPRUN_*` variables (``{"OPRUN_RETENTION_DAYS": "30"}``)."""

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        """Start and wait until it answers /v1/healthz."""
        env = _env(
            {
                "OPRUN_BOOTSTRAP_TOKEN": self.token,
                "OPRUN_LEASE_SECONDS": str(self.lease_seconds),
                "OPRUN_REAP_INTERVAL": str(self.reap_interval),
                **(
                    {"OPRUN_WORKER_SILENCE": str(self.worker_silence)}
                    if self.worker_silence is not None
                    else {}
                ),
                **self.environment,
            }
        )
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oprun",
                "server",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
            ],
            env=env,
            stdout=out,
            stderr=out,
        )
        if not isinstance(out, int):
            out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()  # never leave a half-started server behind
        raise RuntimeError("server did not start within 30 s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Worker:
    """An `oprun worker` subprocess."""

    server: Server
    app: str = "oprun.examples:app"
    concurrency: int = 4
    grace: float = 5.0
    queues: tuple[str, ...] = ("default",)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    options: tuple[str, ...] = ()
    """More `oprun worker` options (``("--metrics-port", "9710")``)."""

    def _registered(self) -> int:
        response = httpx.get(
            f"{self.server.url}/v1/workers",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {self.server.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return len(response.json()["items"])

    def start(self, wait: bool = True) -> Worker:
        """Start the agent; with `wait`, return once it has registered itself and its actions."""
        before = self._registered() if wait else 0
        args = [
            sys.executable,
            "-m",
            "oprun",
            "worker",
            "--app",
            self.app,
            "--concurrency",
            str(self.concurrency),
            "--grace",
            str(self.grace),
        ]
        for queue in self.queues:
            args += ["--queue", queue]
        args += self.options
        env = _env({"OPRUN_URL": self.server.url, "OPRUN_TOKEN": self.server.token})
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, env=env, stdout=out, stderr=out)
        if not isinstance(out, int):
            out.close()
        deadline = time.monotonic() + 30
        while wait and self._registered() <= before:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()  # never leave a half-started worker behind
                raise RuntimeError("worker did not register within 30 s")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        """The agent's process id."""
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Run `server` for the duration of the block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
