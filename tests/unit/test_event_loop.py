"""The server's event loop: uvloop where it is installed, as uvicorn would pick."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from oprun.cli.serve import run_event_loop


def _loop_type() -> tuple[list[type], Any]:
    seen: list[type] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    return seen, main


def test_the_loop_is_uvloops_where_uvloop_is_installed() -> None:
    seen, main = _loop_type()
    run_event_loop(main())
    assert seen == [uvloop.Loop]


def test_without_uvloop_asyncio_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    seen, main = _loop_type()
    run_event_loop(main())
    assert len(seen) == 1 and not issubclass(seen[0], uvloop.Loop)
