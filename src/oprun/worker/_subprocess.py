"""What both executors need from the processes they start.

The python child (`oprun.worker.python.child`) and the OpenJD host
(`oprun.worker.openjd.host`) are started by the worker in a session of their own,
speak JSON lines with it over stdin and stdout, and must never outlive it.

In the child process:

- `take_protocol_pipes()` keeps the pipes to the worker for the protocol alone;
- `die_with_parent()`, `kill_own_group()` and `become_subreaper()` make sure
  nothing it starts outlives the worker;
- `write_line()` writes one protocol line in full.

In the worker:

- `child_environment()`: the worker's environment without its secrets;
- `LineSplitter`, `decode_line()`, `cut_bytes()`: a child's byte streams as
  lines of bounded size.

And the process tree, read from Linux's `/proc`. A process that starts its own
session (`setsid`, as openjd-sessions does for every action) leaves its parent's
process group, so signalling a group is not enough to end everything a task
started. These helpers follow parent links instead::

    kill_tree(host_pid)                   # SIGSTOP every descendant, then SIGKILL them
    kill_tree(host_pid, include_root=True)

A process is known by `(pid, start time)`, so a pid reused after its process died
is never signalled by mistake. On systems without `/proc` these do nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import NamedTuple, NoReturn

from oprun.domain.escaping import escape

SECRET_ENV_MARKERS = ("TOKEN", "SECRET", "PASSWORD")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# -- in the child ------------------------------------------------------------------------
def take_protocol_pipes() -> tuple[int, int]:
    """Keep the pipes to the worker for this process alone; returns (protocol, commands).

    The protocol is written to a copy of the original stdout and commands are read
    from a copy of the original stdin (copies are not inherited). Stdout then goes
    to stderr and stdin reads /dev/null, so what the process starts neither writes
    into the protocol nor steals commands.
    """
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    command_fd = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return protocol_fd, command_fd


def write_line(fd: int, line: str) -> None:
    """Write `line` and a newline to `fd` in full.

    Raises:
        OSError: as `os.write` does (`BrokenPipeError` once the worker is gone).
    """
    data = memoryview((line + "\n").encode())
    while data:
        data = data[os.write(fd, data) :]


def kill_own_group() -> NoReturn:
    """SIGKILL this process's group: this process and every process it started."""
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(137)


def die_with_parent(parent: int) -> None:
    """Linux: have the kernel send SIGHUP when the parent dies (best effort)."""
    if sys.platform.startswith("linux"):
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGHUP))
    if parent and os.getppid() != parent:
        kill_own_group()  # it died before we could ask


def become_subreaper() -> None:
    """Linux: orphaned descendants are reparented to this process, staying in its tree."""
    if sys.platform.startswith("linux"):
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _prctl(option: int, value: int) -> None:
    import ctypes  # only the children need it

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)


# -- in the worker -----------------------------------------------------------------------
def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: the worker's, with its `sys.path`, without secrets.

    `OPRUN_TOKEN` (and any `OPRUN_*` variable naming a token, secret or
    password) never reaches user code.
    """
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.startswith("OPRUN_") and any(m in key for m in SECRET_ENV_MARKERS):
            del env[key]
    cwd = os.getcwd()
    paths = [p or cwd for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _utf8_length(lead: int) -> int:
    """How many bytes the UTF-8 character starting with byte `lead` has (1: not a lead)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


def cut_bytes(raw: bytes, max_bytes: int) -> bytes:
    """`raw` cut to at most `max_bytes`, never inside a UTF-8 character.

    Bytes that are not UTF-8 are kept up to the limit (each is escaped later).
    """
    if len(raw) <= max_bytes:
        return raw
    end = max_bytes
    if raw[end] & 0xC0 == 0x80:  # the cut falls before a continuation byte
        # A character starts at most 3 bytes back: cut before it if it runs past `end`.
        for back in range(1, min(3, end) + 1):
            byte = raw[end - back]
            if byte & 0xC0 != 0x80:
                if _utf8_length(byte) > back:
                    end -= back
                break
    return raw[:end]


def decode_line(raw: bytes) -> str:
    r"""A line of output as text, without its trailing CR.

    UTF-8; a byte that is not is kept as its escape `\xNN` (decoded with
    `surrogateescape`, then `oprun.domain.escaping.escape`), as is a NUL (`\x00`).
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return escape(raw.decode("utf-8", "surrogateescape"))


class LineSplitter:
    """Split a byte stream into lines; a line longer than `max_bytes` is cut.

    The rest of a cut line is skipped up to its newline, so memory stays bounded
    however long a line without a newline grows (a progress bar drawn with CR).
    """

    def __init__(self, max_bytes: int) -> None:
        """Split into lines of at most `max_bytes` bytes (newline excluded)."""
        self._max = max_bytes
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the lines it completed (without their newlines)."""
        *complete, tail = data.split(b"\n")
        lines: list[bytes] = []
        for piece in complete:
            if self._skipping:
                self._skipping = False
                continue
            if self._buf:
                self._buf += piece
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = piece
            lines.append(cut_bytes(line, self._max))
        if not self._skipping and tail:
            self._buf += tail
            if len(self._buf) > self._max:
                lines.append(cut_bytes(bytes(self._buf), self._max))
                self._buf.clear()
                self._skipping = True
        return lines

    def close(self) -> list[bytes]:
        """The end of the stream: the last, unterminated line if there is one."""
        rest = bytes(self._buf)
        self._buf.clear()
        skipped, self._skipping = self._skipping, False
        return [rest] if rest and not skipped else []


# -- the process tree -------------------------------------------------------------------
PROC = Path("/proc")
MAX_ROUNDS = 50
"""How many times `kill_tree` looks again for processes forked while it works."""


class ProcessInfo(NamedTuple):
    """What `/proc/<pid>/stat` says about one process."""

    pid: int
    ppid: int
    pgid: int
    start: int
    """Start time in clock ticks after boot: with the pid, the process's identity."""
    state: str

    @property
    def key(self) -> tuple[int, int]:
        """`(pid, start)`: unique for the lifetime of the system."""
        return (self.pid, self.start)


def read_process(pid: int) -> ProcessInfo | None:
    """The process `pid`, or None when it does not exist (or `/proc` is missing)."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ... starttime(22nd field) ..."; comm may
    # contain spaces and parentheses, so split after its last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcessInfo(
            pid=pid,
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            start=int(fields[19]),
            state=fields[0].decode(),
        )
    except (IndexError, ValueError):
        return None


def all_processes() -> list[ProcessInfo]:
    """Every process visible in `/proc`."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    found = []
    for name in names:
        if name.isdigit():
            info = read_process(int(name))
            if info is not None:
                found.append(info)
    return found


def descendants(root: int) -> list[ProcessInfo]:
    """Every living descendant of `root` (children first), zombies excluded."""
    children: dict[int, list[ProcessInfo]] = {}
    for info in all_processes():
        children.setdefault(info.ppid, []).append(info)
    result: list[ProcessInfo] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid != root:
                todo.append(child.pid)
                if child.state != "Z":
                    result.append(child)
    return result


def tree_keys(root: int) -> frozenset[tuple[int, int]]:
    """The keys of `root`'s living descendants: a snapshot to `spare` later."""
    return frozenset(p.key for p in descendants(root))


def is_running(info: ProcessInfo) -> bool:
    """Whether `info`'s process still runs (not exited, not replaced by a new pid)."""
    now = read_process(info.pid)
    return now is not None and now.start == info.start and now.state != "Z"


def reap_children() -> None:
    """Collect this process's exited children, so orphans reparented here leave no zombies.

    Only safe when no other code of this process waits for a child right now.
    """
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def kill_tree(
    root: int,
    *,
    include_root: bool = False,
    spare: frozenset[tuple[int, int]] = frozenset(),
) -> int:
    """SIGKILL every descendant of `root` and the process groups they lead.

    Descendants are first stopped (SIGSTOP), looking again until no new one
    appears, so none can fork while the tree is taken down. Processes whose key is
    in `spare` (and their descendants) are left alone. Returns how many processes
    were signalled.
    """
    caught: dict[tuple[int, int], ProcessInfo] = {}
    for _ in range(MAX_ROUNDS):
        fresh = [p for p in _unspared(root, spare) if p.key not in caught]
        if not fresh:
            break
        for info in fresh:
            if _send(info, signal.SIGSTOP):
                caught[info.key] = info
    if include_root:
        root_info = read_process(root)
        if root_info is not None:
            caught[root_info.key] = root_info
            _send(root_info, signal.SIGKILL)
    own_group = os.getpgrp()
    leaders = {i.pid for i in caught.values() if i.pgid == i.pid and i.pgid != own_group}
    for info in caught.values():
        _send(info, signal.SIGKILL)
    for pgid in leaders:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    return len(caught)


def _unspared(root: int, spare: frozenset[tuple[int, int]]) -> list[ProcessInfo]:
    found = descendants(root)
    if not spare:
        return found
    spared_pids = {info.pid for info in found if info.key in spare}
    by_pid = {info.pid: info for info in found}

    def is_spared(info: ProcessInfo) -> bool:
        while info.pid != root:
            if info.pid in spared_pids:
                return True
            parent = by_pid.get(info.ppid)
            if parent is None:
                return False
            info = parent
        return False

    return [info for info in found if not is_spared(info)]


def _send(info: ProcessInfo, signum: int) -> bool:
    """Signal `info`'s process if it is still the same process; whether it was sent."""
    current = read_process(info.pid)
    if current is None or current.start != info.start:
        return False
    try:
        os.kill(info.pid, signum)
    except OSError:
        return False
    return True
