"""`HeartbeatLoop`: keeps a worker's leases alive and acts on what the server says of them.

It long-polls `:heartbeat` with every lease held, renewing them every
`lease_seconds / 3` (or the configured interval). The answer names work to
cancel (canceled, SIGTERM then SIGKILL) and work the worker lost (killed, never
reported again). Newly claimed work cuts a long poll short, at most every
`MIN_HEARTBEAT_GAP`, so that the server hears of it, and of a cancel for it, at once.

A heartbeat the server could not answer (it is down, or its database is) is sent
again soon, and never later than half a heartbeat interval (a sixth of a lease): when
the server comes back it hears from the worker before the leases it kept for it run
out, however long it was away (the server forgives its own silence, not the worker's).
A heartbeat that gets no answer at all (a network that drops packets, where TCP would
wait out its own retransmission backoff, seconds after the network is back) is given
up one interval after its long poll should have ended and sent again at once on a new
connection. Until one is answered, heartbeats are plain renewals without a long poll:
being heard comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Literal

from oprun.domain.backoff import backoff
from oprun.domain.errors import NotFound, OprunError, ServerError, Throttled, Unavailable
from oprun.domain.limits import MAX_WAIT_SECONDS
from oprun.domain.protocol import Heartbeat, HeartbeatResponse
from oprun.worker.client import WorkerClient
from oprun.worker.slots import Slots

DEFAULT_HEARTBEAT_SECONDS = 3.0
"""Heartbeat period until the server has said how long its leases last."""
MIN_HEARTBEAT_GAP = 1.0
"""Newly claimed work restarts a heartbeat long poll (so its cancel arrives at once), at most this often."""
RETRY_FIRST = 0.25
"""The first pause before a failed heartbeat is sent again; it doubles up to half the interval."""

log = logging.getLogger("oprun.worker")

WorkerState = Literal["RUNNING", "IDLE", "STOPPING", "STOPPED"]


class _Unanswered(Unavailable):
    """A heartbeat got no answer in time: the connection may be dead. Send another."""


class HeartbeatLoop:
    """The heartbeats of one worker, over its `client`, for the work its `slots` hold."""

    def __init__(
        self,
        client: WorkerClient,
        slots: Slots,
        *,
        interval: float | None,
        worker_id: Callable[[], str | None],
        on_unknown: Callable[[str | None], Awaitable[None]],
        on_stop: Callable[[], None],
    ) -> None:
        """Beat every `interval` seconds (`lease_seconds / 3` when None).

        Args:
            client: the worker's HTTP client.
            slots: the work held; cancels and lost leases are applied to it.
            interval: seconds between heartbeats; None follows the server's leases.
            worker_id: the worker's id now (it changes when the worker registers again).
            on_unknown: the server does not know this worker id (any more).
            on_stop: the server asks the worker to stop.
        """
        self._client = client
        self._slots = slots
        self._interval = interval
        self._worker_id = worker_id
        self._on_unknown = on_unknown
        self._on_stop = on_stop
        self.lease_seconds: float | None = None
        """How long the server's leases last, once it has said (a claim or a heartbeat)."""

    def interval(self) -> float:
        """Seconds between heartbeats now."""
        if self._interval is not None:
            return self._interval
        if self.lease_seconds:
            return min(MAX_WAIT_SECONDS, max(0.1, self.lease_seconds / 3))
        return DEFAULT_HEARTBEAT_SECONDS

    def _state(self) -> WorkerState:
        if self._slots.stopping:
            return "STOPPING"
        return "RUNNING" if self._slots.running else "IDLE"

    async def run(self) -> None:
        """Beat until cancelled."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            interval = self.interval()
            held = self._slots.held()
            beat = Heartbeat(held=held, status=self._state())
            started = loop.time()
            self._slots.held_added.clear()
            worker_id = self._worker_id()
            wait = interval if held and not failures else 0.0
            try:
                response = await self._beat(worker_id, beat, wait, started, patience=interval)
            except NotFound:
                await self._on_unknown(worker_id)
                continue
            except (Unavailable, ServerError, Throttled) as exc:
                failures += 1
                pause = backoff(failures - 1, RETRY_FIRST, interval / 2, random.random())
                if isinstance(exc, _Unanswered):
                    pause = 0.0  # it has waited a whole interval already
                if failures == 1:
                    log.warning(
                        "heartbeat_failed worker_id=%s held=%s code=%s retry_within=%.2f error=%s",
                        worker_id,
                        len(held),
                        exc.code,
                        interval / 2,
                        exc.message,
                    )
                await asyncio.sleep(pause)
                continue
            if response is None:
                continue  # new work is held: beat again with it
            if failures:
                log.warning("heartbeat_restored worker_id=%s failed=%s", worker_id, failures)
                failures = 0
            if self._on_answer(response):
                continue
            interval = self.interval()  # the first answer brings the server's lease
            await self._pause(until=started + interval, earliest=started + MIN_HEARTBEAT_GAP)

    async def once(self, status: WorkerState) -> None:
        """One heartbeat, not retried: say STOPPING before giving work back, STOPPED at the end."""
        worker_id = self._worker_id()
        if worker_id is None:
            return
        held = self._slots.held() if status != "STOPPED" else []
        beat = Heartbeat(held=held, status=status)
        with contextlib.suppress(OprunError, TimeoutError):
            response = await asyncio.wait_for(
                self._client.heartbeat(worker_id, beat, 0.0, retry=False), 5.0
            )
            if status != "STOPPED":
                self._on_answer(response)

    async def _beat(
        self,
        worker_id: str | None,
        beat: Heartbeat,
        wait: float,
        started: float,
        *,
        patience: float,
    ) -> HeartbeatResponse | None:
        """One heartbeat; None when it was cut short to include newly claimed work.

        Raises:
            _Unanswered: no answer `patience` seconds after the long poll's `wait`.
        """
        assert worker_id is not None
        loop = asyncio.get_running_loop()
        # Not retried by the client: this loop sends it again, paced by the interval.
        request = asyncio.create_task(self._client.heartbeat(worker_id, beat, wait, retry=False))
        added = asyncio.create_task(self._slots.held_added.wait())
        try:
            # Cancelling the request on time-out closes its connection: the next one is new.
            done, _ = await asyncio.wait(
                {request, added},
                timeout=max(0.0, started + wait + patience - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                raise _Unanswered(f"no answer to a heartbeat within {wait + patience:.1f} s")
            if request not in done:
                gap = started + MIN_HEARTBEAT_GAP - loop.time()
                if gap > 0:
                    await asyncio.wait({request}, timeout=gap)
                if not request.done():
                    return None
            return request.result()
        finally:
            added.cancel()
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request

    async def _pause(self, *, until: float, earliest: float) -> None:
        """Sleep until `until`, or until new work is held (but not before `earliest`)."""
        loop = asyncio.get_running_loop()
        remaining = until - loop.time()
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(self._slots.held_added.wait(), remaining)
        except TimeoutError:
            return
        gap = min(earliest, until) - loop.time()
        if gap > 0:
            await asyncio.sleep(gap)

    def _on_answer(self, response: HeartbeatResponse) -> bool:
        """Act on a heartbeat's answer; True when it held news."""
        self.lease_seconds = response.lease_seconds
        news = False
        for sa in response.cancel:
            news = self._slots.cancel(sa) or news
        for sa in response.lost:
            news = self._slots.lose(sa, "lease lapsed or superseded") or news
        if response.stop:
            self._on_stop()
        return news
