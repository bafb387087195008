"""The worker's pure parts: line splitting and the report batcher (with a fake `send`)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from oprun.context import Context, cut_text
from oprun.domain.protocol import ReportBatchResponse, ReportOutcome
from oprun.worker._subprocess import LineSplitter, cut_bytes
from oprun.worker.reports import ReportBatcher


def test_lines_are_split_across_chunks_and_long_ones_cut():
    s = LineSplitter(8)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\nde") == [b"abc"]
    assert s.feed(b"f\n0123456789abc") == [b"def", b"01234567"]
    assert s.feed(b"def\nok\n") == [b"ok"]  # the rest of the cut line is skipped
    assert s.feed(b"tail") == []
    assert s.close() == [b"tail"]


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_splitting_in_chunks_equals_splitting_at_once(chunks):
    whole = b"".join(chunks)
    s = LineSplitter(1000)
    got = [line for c in chunks for line in s.feed(c)] + s.close()
    expected = whole.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert got == expected


def test_cuts_never_split_a_character():
    assert cut_bytes("é".encode() * 3, 5) == "éé".encode()
    assert cut_text("ééé", 5) == "éé"
    assert cut_text("short", 5) == "short"


def test_context_checks_its_arguments(tmp_path):
    events = []
    ctx = Context(
        operation_id="op",
        task_id="t",
        attempt=1,
        parameters={"a": 1},
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        emit=events.append,
    )
    ctx.progress(50, "half")
    ctx.step("PROCESSING")
    ctx.log("a", 1, "two\nlines")
    assert events == [
        {"event": "progress", "percent": 50.0, "message": "half"},
        {"event": "step", "code": "PROCESSING"},
        {"event": "log", "line": "a 1 two"},
        {"event": "log", "line": "lines"},
    ]
    for bad in (101, -1, float("nan"), "50", True):
        try:
            ctx.progress(bad)
        except ValueError:
            continue
        raise AssertionError(f"progress({bad!r}) was accepted")
    try:
        ctx.step("x" * 65)
    except ValueError:
        pass
    else:
        raise AssertionError("a long step code was accepted")
    assert not ctx.cancelled
    assert ctx.input_dir.is_dir()
    ctx.close()
    ctx.log("after the task")
    assert len(events) == 4


class FakeServer:
    def __init__(self, refuse=()):
        self.batches = []
        self.refuse = set(refuse)

    async def send(self, body: str) -> ReportBatchResponse:
        reports = json.loads(body)["reports"]
        self.batches.append(reports)
        return ReportBatchResponse(
            outcomes=[
                ReportOutcome(
                    session_action_id=r["session_action_id"],
                    accepted=r["session_action_id"] not in self.refuse,
                    reason="lost" if r["session_action_id"] in self.refuse else None,
                )
                for r in reports
            ]
        )


async def _drive(batcher: ReportBatcher) -> None:
    runner = asyncio.create_task(batcher.run())
    try:
        await asyncio.wait_for(batcher.flush(), 5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def test_batcher_merges_logs_and_progress_and_keeps_order():
    server = FakeServer()
    settled = []
    batcher = ReportBatcher(server.send, lambda r, o: settled.append((r.kind, o.accepted)))
    batcher.add("sa1", 1, "running")
    for i in range(100):
        batcher.progress("sa1", 1, percent=float(i))
        batcher.log("sa1", 1, [f"line {i}"], "stdout")
    batcher.progress("sa1", 1, step_code="UPLOADING")
    batcher.progress("sa1", 1, percent=100.0, message="done")
    batcher.add("sa1", 1, "succeeded", result={"ok": True})
    asyncio.run(_drive(batcher))
    sent = [r for batch in server.batches for r in batch]
    # Interleaved progress/log pairs cannot merge past each other, but runs of each do.
    assert sent[0]["kind"] == "running"
    assert sent[-1] == {
        "session_action_id": "sa1",
        "lease_epoch": 1,
        "kind": "succeeded",
        "result": {"ok": True},
    }
    assert sent[-2]["kind"] == "progress"
    assert sent[-2]["percent"] == 100.0 and sent[-2]["step_code"] == "UPLOADING"
    lines = [line for r in sent if r["kind"] == "log" for line in r["lines"]]
    assert lines == [f"line {i}" for i in range(100)]
    assert settled[-1] == ("succeeded", True)


def test_batcher_splits_big_batches_and_reports_refusals():
    server = FakeServer(refuse={"sa2"})
    refused = []
    batcher = ReportBatcher(
        server.send,
        lambda r, o: None if o.accepted else refused.append(r.session_action_id),
        max_reports=10,
    )
    for i in range(25):
        batcher.add(f"sa{i % 3}", 1, "running")
    asyncio.run(_drive(batcher))
    assert [len(b) for b in server.batches] == [10, 10, 5]
    assert refused == ["sa2"] * 8


def test_discard_drops_a_session_actions_unsent_reports():
    server = FakeServer()
    batcher = ReportBatcher(server.send, lambda r, o: None)
    batcher.add("keep", 1, "running")
    batcher.log("lost", 1, ["x"], "stdout")
    batcher.add("lost", 1, "succeeded")
    batcher.discard("lost")
    asyncio.run(_drive(batcher))
    assert [r["session_action_id"] for b in server.batches for r in b] == ["keep"]


class GatedServer(FakeServer):
    """A server whose answers wait for `gate`: a batch stays in flight until it opens."""

    def __init__(self):
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, body: str) -> ReportBatchResponse:
        self.batches.append(json.loads(body)["reports"])
        await self.gate.wait()
        self.gate.clear()
        return await FakeServer().send(body)


async def _until(condition, turns=1000):
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def test_batcher_sends_at_once_and_gathers_only_while_a_batch_is_in_flight():
    async def scenario():
        server = GatedServer()
        batcher = ReportBatcher(server.send, lambda r, o: None)
        runner = asyncio.create_task(batcher.run())
        try:
            # Nothing in flight: the first report goes without any wait (no timer runs).
            batcher.progress("sa1", 1, percent=1.0)
            await _until(lambda: len(server.batches) == 1, turns=20)
            # In flight: what comes meanwhile waits, then goes as one batch.
            batcher.add("sa2", 1, "succeeded")
            batcher.log("sa1", 1, ["x"], "stdout")
            batcher.add("sa3", 1, "failed")
            for _ in range(20):
                await asyncio.sleep(0)
            assert len(server.batches) == 1
            server.gate.set()
            await _until(lambda: len(server.batches) == 2)
            assert [r["kind"] for r in server.batches[1]] == ["succeeded", "log", "failed"]
            server.gate.set()
            await asyncio.wait_for(batcher.flush(), 5)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())


def test_a_lone_running_report_is_held_until_its_outcome_replaces_it():
    async def scenario():
        server = FakeServer()
        batcher = ReportBatcher(server.send, lambda r, o: None, running_hold=30.0)
        runner = asyncio.create_task(batcher.run())
        try:
            batcher.add("sa1", 1, "running")
            await asyncio.sleep(0.05)
            assert server.batches == []  # held: the outcome may make it needless
            batcher.add("sa1", 1, "succeeded")  # replaces it, and goes at once
            await _until(lambda: len(server.batches) == 1)
            assert [r["kind"] for r in server.batches[0]] == ["succeeded"]
            # Anything else to send ends a hold: the running report goes along.
            batcher.add("sa2", 1, "running")
            batcher.progress("sa3", 1, percent=5.0)
            await _until(lambda: len(server.batches) == 2)
            assert [r["kind"] for r in server.batches[1]] == ["running", "progress"]
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        # A task that runs on: its running report goes once the hold is over.
        server = FakeServer()
        batcher = ReportBatcher(server.send, lambda r, o: None, running_hold=0.01)
        runner = asyncio.create_task(batcher.run())
        try:
            batcher.add("sa4", 1, "running")
            await asyncio.sleep(0.5)
            assert [r["kind"] for b in server.batches for r in b] == ["running"]
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
