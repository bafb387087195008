"""A real `oprun server` runs its event loop on uvloop."""

from __future__ import annotations

from pathlib import Path

import pytest

from oprun.testing import Server


def test_the_server_process_runs_on_uvloop(tmp_path: Path) -> None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc to read a process's loaded libraries from")
    server = Server(database_url=f"sqlite:///{tmp_path / 'oprun.db'}").start()
    try:
        assert server.process is not None
        loaded = Path(f"/proc/{server.process.pid}/maps").read_text()
    finally:
        server.stop()
    assert "uvloop/loop." in loaded
