"""Test hosts on one machine: network namespaces on a bridge, and a PostgreSQL of their own.

For the multi-host rehearsal (test_rehearsal.py). Each host is a network namespace
with one veth to a bridge that lives in a "switch" namespace of its own, so nothing
is added to the machine's own network: the hosts reach each other at addresses of
the benchmark range 198.18.0.0/24 (RFC 2544) and nothing else, and the machine's
services stay on its loopback. Every namespace is named after a per-run prefix and
deleted at the end (its veth, and the bridge, with it).

A process runs on a host through ``ip netns exec`` (which execs it: its pid is the
process's own). A thread of the test joins a host with `Host.enter`, so that the
connections it opens start there; the test's other threads must never connect to a
host's address, which from the machine's own namespace would leave the machine.

Needs root, iproute2 and PostgreSQL 15's server binaries (Debian's
``postgresql-15``, or ``OPRUN_TEST_PG_BIN``); `require_netns` skips without them, or fails when
``OPRUN_REQUIRE_NETNS=1`` (set by CI) makes the rehearsal mandatory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path(os.environ.get("OPRUN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUBNET = "198.18.0"
"""The hosts' /24, in the range RFC 2544 sets aside for benchmarks."""
REQUIRE_NETNS = os.environ.get("OPRUN_REQUIRE_NETNS") == "1"
CLONE_NEWNET = 0x40000000
PG_PORT = 5432


def _run(*args: str, timeout: float = 60) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {done.returncode}: {done.stderr.strip()}")


@cache
def netns_problem() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("runuser") is None:
        return "iproute2's ip and util-linux's runuser are needed"
    missing = [p for p in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / p).exists()]
    if missing:
        return f"no {', '.join(missing)} in {PG_BIN}: apt-get install postgresql-15"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user to run a private PostgreSQL as"
    probe = f"opr-{os.getpid()}-probe"
    try:
        _run("ip", "netns", "add", probe)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(OSError, RuntimeError, subprocess.TimeoutExpired):
        _run("ip", "netns", "delete", probe)
    return None


def require_netns() -> None:
    """Skip with the reason when test hosts cannot be made; fail instead when mandatory."""
    problem = netns_problem()
    if problem is None:
        return
    if REQUIRE_NETNS:
        pytest.fail(f"{problem} (OPRUN_REQUIRE_NETNS=1 makes the multi-host rehearsal mandatory)")
    pytest.skip(problem)


@dataclass(frozen=True)
class Host:
    """A test host: a network namespace with one address on the switch."""

    name: str
    namespace: str
    address: str
    port: str
    """Its veth's name in the switch namespace (down: the host is cut off)."""

    def popen(
        self, args: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `args` on this host, its output appended to `log`."""
        with log.open("ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=out,
            )

    def enter(self) -> None:
        """Move the calling thread (only it) to this host: the sockets it opens are the host's."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{self.namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns {self.namespace}: {os.strerror(errno)}")
        finally:
            os.close(fd)


class Network:
    """Hosts on one bridge; `close()` deletes every namespace it made, and nothing else."""

    def __init__(self) -> None:
        self.prefix = f"opr-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []

    def _namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def start(self) -> Network:
        """Make the switch: a namespace holding the bridge."""
        self._namespace(self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        return self

    def add(self, name: str, last: int) -> Host:
        """A host named `name` at 198.18.0.`last`, plugged into the switch."""
        host = Host(name, f"{self.prefix}-{name}", f"{SUBNET}.{last}", f"p-{name}")
        self._namespace(host.namespace)
        # Made in the switch's namespace, the peer moved straight into the host's.
        _run(
            "ip", "-n", self.switch, "link", "add", host.port, "type", "veth",
            "peer", "name", "eth0", "netns", host.namespace,
        )  # fmt: skip
        _run("ip", "-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _run("ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Unplug `host`: what it sends, and what is sent to it, is dropped."""
        _run("ip", "-n", self.switch, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        """Plug `host` back in."""
        _run("ip", "-n", self.switch, "link", "set", host.port, "up")

    def close(self) -> None:
        """Delete the namespaces made here (their veths and the bridge go with them)."""
        for name in reversed(self._made):
            with contextlib.suppress(OSError, RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "netns", "delete", name)
        self._made.clear()


class PrivatePostgres:
    """A PostgreSQL server of the test's own on `host`, in a temporary directory.

    It runs as the ``postgres`` OS user (PostgreSQL refuses root), listens on the
    host's address with trust for the test subnet, and keeps its Unix socket in its
    own directory, which the test connects to for its checks (a path, not the network).
    """

    def __init__(self, host: Host, prefix: str) -> None:
        self.host = host
        self.folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.database = "oprun"

    @property
    def url(self) -> str:
        """The database's URL for the other hosts."""
        return f"postgresql://postgres@{self.host.address}:{PG_PORT}/{self.database}"

    def _as_postgres(self, *args: str, netns: bool = False) -> None:
        command = ["runuser", "-u", "postgres", "--", *args]
        if netns:
            command = ["ip", "netns", "exec", self.host.namespace, *command]
        _run(*command, timeout=120)

    def create(self) -> PrivatePostgres:
        """initdb, configure, start, and create the database."""
        os.chmod(self.folder, 0o755)
        shutil.chown(self.folder, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "--encoding=UTF8",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.host.address}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{self.folder}'\nmax_connections = 200\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self.start()
        self._as_postgres(
            str(PG_BIN / "createdb"), "-h", str(self.folder), "-p", str(PG_PORT), self.database
        )
        return self

    def start(self) -> None:
        """Start the server on its host; return once it accepts connections."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "start", netns=True,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut, as in an orderly restart)."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )  # fmt: skip

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection over the Unix socket, for the test's own checks."""
        return psycopg.connect(
            host=str(self.folder),
            port=PG_PORT,
            user="postgres",
            dbname=self.database,
            autocommit=True,
            connect_timeout=10,
        )

    def close(self) -> None:
        """Stop the server if it runs, and delete its files."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
