"""The reaper: ends attempts whose lease lapsed so their tasks run again."""

from __future__ import annotations

import asyncio
import logging

from anyio.to_thread import run_sync

from oprun.service.settings import Settings
from oprun.store import Store

log = logging.getLogger("oprun.reaper")


async def reap_forever(store: Store, settings: Settings) -> None:
    """Reap every `reap_interval` seconds until cancelled (every API process runs one)."""
    while True:
        try:
            ended = await run_sync(store.reap, settings.worker_silence)
            if ended:
                log.info("event=reaped attempts=%d", ended)
        except Exception:
            log.exception("event=reap_failed")
        await asyncio.sleep(settings.reap_interval)
