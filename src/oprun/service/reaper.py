"""The reaper: ends attempts whose lease lapsed, times out operations, wakes due retries."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from anyio.to_thread import run_sync

from oprun.domain.errors import Unavailable
from oprun.domain.silence import SilenceRule
from oprun.service.metrics import Metrics
from oprun.service.settings import Settings
from oprun.store import Store

log = logging.getLogger("oprun.reaper")


@dataclass(frozen=True)
class Reaped:
    """What one reaper round did."""

    attempts: int
    """Attempts ended because their lease lapsed."""
    timed_out: int
    """Operations canceled because they ran past their deadline."""
    since: float
    """The instant due retries were checked up to: the next round's `since`."""


def silence_rule(settings: Settings) -> SilenceRule:
    """The rule a round forgives the server's own silence by."""
    return SilenceRule(reap_interval=settings.reap_interval, lease_seconds=settings.lease_seconds)


async def reap_round(
    store: Store,
    settings: Settings,
    silence: SilenceRule,
    since: float,
    metrics: Metrics | None = None,
) -> Reaped:
    """One round: lapsed leases, then deadlines, then retries come due after `since`.

    Each step reads only the rows that are due, through an index that holds just the
    unfinished ones, so a round costs what is due, not what the database holds. What a
    step did is logged (and counted in `metrics`) as soon as it is done.
    """
    ended = await run_sync(functools.partial(store.reap, settings.worker_silence, silence=silence))
    if ended:
        log.info("event=reaped attempts=%d", ended)
        if metrics is not None:
            metrics.lease_lapses.inc(ended)
    timed_out = await run_sync(store.time_out_operations)
    if timed_out:
        log.info("event=timed_out operations=%d", timed_out)
    since = await run_sync(store.wake_for_due_retries, since)
    return Reaped(ended, timed_out, since)


async def reap_forever(store: Store, settings: Settings, metrics: Metrics | None = None) -> None:
    """Reap every `reap_interval` seconds until cancelled (every API process runs one).

    Each round (`reap_round`): attempts whose lease lapsed end INTERRUPTED (their tasks
    run again while attempts remain); operations past their deadline are canceled and
    end FAILED with `TIMEOUT`; claims waiting in projects whose delayed retries came due
    are woken (so a retry is at most one interval late). A round that comes long after
    the last one of any API process forgives that silence of the server's own first
    (`oprun.domain.silence`): no worker loses a lease for heartbeats it could not store.
    """
    silence = silence_rule(settings)
    since = await run_sync(store.now)
    while True:
        try:
            since = (await reap_round(store, settings, silence, since, metrics)).since
        except Unavailable:
            pass  # the store logged it; the next round tries again
        except Exception:
            log.exception("event=reap_failed")
        await asyncio.sleep(settings.reap_interval)
