"""The in-process notifier: generations, wake-ups, and counting every key as published."""

from __future__ import annotations

import asyncio

from oprun.store.notify import Notifier, work_key


def test_publishing_a_key_moves_its_generation_and_no_other() -> None:
    notifier = Notifier()
    a, b = work_key("a"), work_key("b")
    before = notifier.generation(a), notifier.generation(b)
    notifier.publish([a])
    assert (notifier.generation(a), notifier.generation(b)) == (before[0] + 1, before[1])


def test_publishing_everything_moves_every_generation_and_wakes_every_waiter() -> None:
    notifier = Notifier()
    keys = [work_key("a"), work_key("b"), "tokens"]
    before = [notifier.generation(key) for key in keys[:2]]
    called: list[str] = []
    notifier.subscribe("tokens", lambda: called.append("tokens"))

    async def wait_on(key: str) -> bool:
        async with notifier.listen(key) as signal:
            return await signal.wait(5.0)

    async def scene() -> list[bool]:
        waiters = [asyncio.create_task(wait_on(key)) for key in ("op:1", "end:2")]
        await asyncio.sleep(0.05)  # both listen before the publication
        notifier.publish_everything()
        return await asyncio.gather(*waiters)

    assert asyncio.run(scene()) == [True, True]
    assert [notifier.generation(key) for key in keys[:2]] == [g + 1 for g in before]
    assert called == ["tokens"]
