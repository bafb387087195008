"""Wake-ups: waiters in this process are woken when a key they listen on is published.

A store publishes keys here after each commit; the PostgreSQL store also sends them
with NOTIFY, and a listener thread in every other API process publishes what arrives
there, so every process wakes its own waiters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


class Signal:
    """A one-shot flag a waiter awaits; set from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake the waiter (thread-safe)."""
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float, hangup: asyncio.Event | None = None) -> bool:
        """Wait up to `timeout` seconds, or until `hangup` is set; True when fired."""
        waiters = [asyncio.ensure_future(self._event.wait())]
        if hangup is not None:
            waiters.append(asyncio.ensure_future(hangup.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._event.is_set()

    def clear(self) -> None:
        """Re-arm the flag (call from the waiter's loop)."""
        self._event.clear()


class Notifier:
    """In-process fan-out of published keys to listening signals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Signal]] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._generations: dict[str, int] = {}
        self.closing = False
        """Set at shutdown: long polls answer at once instead of waiting."""

    @property
    def hears_everything(self) -> bool:
        """Whether every key published by any process reaches this one now.

        In process: always. A PostgreSQL listener that lost its connection misses
        keys until it is back, so caches kept fresh by keys must not be trusted then.
        """
        return True

    def generation(self, key: str) -> int:
        """How many times `key` was published here since this was first asked about it.

        Equal readings mean nothing published `key` in between (while
        `hears_everything`): what a read before the first found is still so.
        """
        with self._lock:
            return self._generations.setdefault(key, 0)

    def wire(self, key: str) -> str:
        """`key` as sent to other processes (in process: nothing is sent)."""
        return key

    def subscribe(self, key: str, callback: Callable[[], None]) -> None:
        """Call `callback` (from the publishing thread; keep it short) each time `key` is published."""
        with self._lock:
            self._callbacks.setdefault(key, []).append(callback)

    async def long_poll(
        self,
        keys: Sequence[str],
        seconds: float,
        hangup: asyncio.Event | None,
        fetch: Callable[[], Awaitable[T]],
        ready: Callable[[T], bool],
    ) -> T:
        """Fetch until `ready` says so, `seconds` pass, the caller hangs up or the server stops.

        Fetches again each time one of `keys` is published; answers the last fetch.
        """
        deadline = time.monotonic() + seconds
        async with self.listen(*keys) as signal:
            while True:
                signal.clear()
                value = await fetch()
                left = deadline - time.monotonic()
                if ready(value) or left <= 0 or self.should_answer(hangup):
                    return value
                await signal.wait(left, hangup)

    def should_answer(self, hangup: asyncio.Event | None) -> bool:
        """Whether a long poll should answer now: the server is stopping or the caller left."""
        return self.closing or (hangup is not None and hangup.is_set())

    def shutdown(self) -> None:
        """Wake every waiter and make new waits return at once (the server is stopping)."""
        self.closing = True
        with self._lock:
            everyone = {s for listeners in self._listeners.values() for s in listeners}
        for signal in everyone:
            signal.fire()

    def publish(self, keys: Iterable[str]) -> None:
        """Wake every listener of each key."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                if key in self._generations:
                    self._generations[key] += 1
            fired = {s for key in keys for s in self._listeners.get(key, ())}
            calls = [c for key in keys for c in self._callbacks.get(key, ())]
        for call in calls:
            call()
        for signal in fired:
            signal.fire()

    def publish_everything(self) -> None:
        """Treat every key as published: wake every waiter and fire every callback.

        For a process that may have missed keys (its PostgreSQL listener was away): what
        any waiter or cache learned before may have changed meanwhile.
        """
        with self._lock:
            keys = set(self._generations) | set(self._listeners) | set(self._callbacks)
        self.publish(keys)

    @asynccontextmanager
    async def listen(self, *keys: str) -> AsyncIterator[Signal]:
        """Listen on `keys` for the duration of the block.

        Enter the block *before* checking the state you wait on, so a change that
        lands between the check and the wait still wakes you.
        """
        signal = Signal(asyncio.get_running_loop())
        with self._lock:
            for key in keys:
                self._listeners.setdefault(key, set()).add(signal)
        try:
            yield signal
        finally:
            with self._lock:
                for key in keys:
                    listeners = self._listeners.get(key)
                    if listeners is not None:
                        listeners.discard(signal)
                        if not listeners:
                            del self._listeners[key]

    def close(self) -> None:
        """Release resources (nothing to do in process)."""


def work_key(project_id: str) -> str:
    """Published when tasks become claimable in a project."""
    return f"work:{project_id}"


def operation_key(operation_id: str) -> str:
    """Published when an operation changes."""
    return f"op:{operation_id}"


def ended_key(operation_id: str) -> str:
    """Published when an operation reaches a terminal status (what `:wait` waits for)."""
    return f"end:{operation_id}"


def logs_key(operation_id: str) -> str:
    """Published when an operation gets log lines."""
    return f"logs:{operation_id}"


def worker_key(worker_id: str) -> str:
    """Published when a worker has news (cancel requests)."""
    return f"worker:{worker_id}"


def events_key(project_id: str) -> str:
    """Published when a project gets events."""
    return f"events:{project_id}"


def tokens_key() -> str:
    """Published when a token is revoked: every process drops its cached tokens."""
    return "tokens"
