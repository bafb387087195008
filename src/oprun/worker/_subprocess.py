"""Finding and killing a process's descendants through Linux's `/proc`.

A process that starts its own session (`setsid`, as openjd-sessions does for every
action) leaves its parent's process group, so signalling a group is not enough to
end everything a task started. These helpers follow parent links instead:

    kill_tree(host_pid)                   # SIGSTOP every descendant, then SIGKILL them
    kill_tree(host_pid, include_root=True)

A process is known by `(pid, start time)`, so a pid reused after its process died
is never signalled by mistake. On systems without `/proc` these do nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MAX_ROUNDS = 50
"""How many times `kill_tree` looks again for processes forked while it works."""


@dataclass(frozen=True)
class ProcessInfo:
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
