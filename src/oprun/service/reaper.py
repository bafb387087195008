"""The reaper: ends attempts whose lease lapsed, times out operations, wakes due retries."""

from __future__ import annotations

import asyncio
import functools
import logging

from anyio.to_thread import run_sync

from oprun.domain.errors import Unavailable
from oprun.domain.silence import SilenceRule
from oprun.service.metrics import Metrics
from oprun.service.settings import Settings
from oprun.store import Store

log = logging.getLogger("oprun.reaper")


async def reap_forever(store: Store, settings: Settings, metrics: Metrics | None = None) -> None:
    """Reap every `reap_interval` seconds until cancelled (every API process runs one).

    Each round: attempts whose lease lapsed end INTERRUPTED (their tasks run again
    while attempts remain); operations past their deadline are canceled and end
    FAILED with `TIMEOUT`; claims waiting in projects whose delayed retries came due
    are woken (so a retry is at most one interval late). A round that comes long after
    the last one of any API process forgives that silence of the server's own first
    (`oprun.domain.silence`): no worker loses a lease for heartbeats it could not store.
    """
    silence = SilenceRule(
        reap_interval=settings.reap_interval, lease_seconds=settings.lease_seconds
    )
    since = await run_sync(store.now)
    while True:
        try:
            ended = await run_sync(
                functools.partial(store.reap, settings.worker_silence, silence=silence)
            )
            if ended:
                log.info("event=reaped attempts=%d", ended)
                if metrics is not None:
                    metrics.lease_lapses.inc(ended)
            timed_out = await run_sync(store.time_out_operations)
            if timed_out:
                log.info("event=timed_out operations=%d", timed_out)
            since = await run_sync(store.wake_for_due_retries, since)
        except Unavailable:
            pass  # the store logged it; the next round tries again
        except Exception:
            log.exception("event=reap_failed")
        await asyncio.sleep(settings.reap_interval)
