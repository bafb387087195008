"""Finding and killing descendants through /proc, sparing what existed before."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from oprun.worker._subprocess import is_running, kill_tree, read_process, tree_keys

pytestmark = [
    pytest.mark.timeout(20),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]


def wait_for(predicate, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_read_process_survives_a_command_name_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a (b) c"
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        info = read_process(proc.pid)
        assert info is not None
        assert (info.pid, info.ppid, info.pgid) == (proc.pid, os.getpid(), os.getpgrp())
        assert is_running(info)
    finally:
        proc.kill()
        proc.wait()
    assert read_process(proc.pid) is None


def test_kill_tree_kills_descendants_in_other_sessions_and_spares_the_snapshot(tmp_path):
    pids, go = tmp_path / "pids", tmp_path / "go"
    script = f"""
    sleep 30 & echo $! >> {pids}
    while [ ! -e {go} ]; do sleep 0.01; done
    setsid sleep 30 & echo $! >> {pids}
    wait
    """
    root = subprocess.Popen(["bash", "-c", script], start_new_session=True)

    def listed() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    try:
        wait_for(lambda: len(listed()) == 1)
        spared = tree_keys(root.pid)
        go.touch()
        wait_for(lambda: len(listed()) == 2)
        first, late = listed()
        wait_for(lambda: read_process(late).pgid == late)  # it leaves root's process group
        assert kill_tree(root.pid, spare=spared) == 1
        wait_for(lambda: read_process(late) is None or read_process(late).state == "Z")
        assert root.poll() is None and is_running(read_process(first))
        assert kill_tree(root.pid, include_root=True) == 2
        root.wait(timeout=5)
        wait_for(lambda: read_process(first) is None)
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
