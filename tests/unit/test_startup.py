"""A long-running process settles its start-up objects once it serves (gc.freeze)."""

from __future__ import annotations

import asyncio
import gc

from oprun.cli.serve import _run_until_signalled
from oprun.startup import settle_startup_objects


class _Server:
    """What `_run_until_signalled` reads of a uvicorn server: it starts, then serves briefly."""

    started = False
    should_exit = False
    install_signal_handlers = None

    async def serve(self) -> None:
        self.started = True
        while not self.should_exit:  # noqa: ASYNC110 (uvicorn stops on this flag)
            await asyncio.sleep(0.01)


def test_settling_moves_every_live_object_out_of_the_collectors_sight():
    try:
        gc.unfreeze()
        settle_startup_objects()
        assert gc.get_freeze_count() > 1000  # the modules of this test process at least
    finally:
        gc.unfreeze()


def test_a_server_settles_its_start_up_objects_before_it_says_it_serves():
    frozen_when_started: list[int] = []
    server = _Server()

    def started() -> None:
        frozen_when_started.append(gc.get_freeze_count())
        server.should_exit = True

    try:
        gc.unfreeze()
        asyncio.run(_run_until_signalled(server, None, started))
    finally:
        gc.unfreeze()
    assert len(frozen_when_started) == 1
    assert frozen_when_started[0] > 1000
