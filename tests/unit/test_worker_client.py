"""The worker client's reading of claims: action definitions validated once each."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest

from oprun.domain.models import ActionDefinition
from oprun.domain.protocol import Heartbeat
from oprun.worker.client import WorkerClient, _Actions


def assignment(sa: str, action: dict[str, object]) -> dict[str, object]:
    return {
        "session_action_id": sa,
        "lease_epoch": 1,
        "lease_seconds": 30.0,
        "operation_id": "op_1",
        "task_id": "tsk_1",
        "action": action,
        "parameters": {"n": 1},
        "attempt": 1,
        "timeout": None,
    }


def test_a_repeated_definition_is_validated_once_and_a_changed_one_again():
    actions = _Actions()
    noop = {"name": "noop", "kind": "python", "entrypoint": "m:noop", "timeout": 5}
    body = json.dumps({"assignments": [assignment("sa_1", noop), assignment("sa_2", noop)]})
    first = actions.claim_response(body.encode())
    again = actions.claim_response(body.encode())
    definitions = {id(a.action) for a in [*first.assignments, *again.assignments]}
    assert len(definitions) == 1  # one model, shared: models are immutable
    assert first.assignments[0].action == ActionDefinition(
        name="noop", entrypoint="m:noop", timeout=5
    )
    changed = {**noop, "timeout": 7}
    body = json.dumps({"assignments": [assignment("sa_3", changed)]})
    assert actions.claim_response(body.encode()).assignments[0].action.timeout == 7
    assert first.assignments[1].session_action_id == "sa_2"


def test_an_invalid_definition_or_answer_is_refused_as_before():
    actions = _Actions()
    bad = {"name": "noop", "kind": "python", "max_attempts": 0}
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(json.dumps({"assignments": [assignment("sa_1", bad)]}).encode())
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(b"not json")
    with pytest.raises(pydantic.ValidationError):
        actions.claim_response(b'{"assignments": [{"action": {"name": "x"}}]}')


def test_the_cache_keeps_a_bounded_number_of_definitions():
    actions = _Actions(size=2)
    for i in range(5):
        action = {"name": f"a{i}", "kind": "python", "entrypoint": "m:f"}
        body = json.dumps({"assignments": [assignment("sa_1", action)]})
        actions.claim_response(body.encode())
    assert len(actions._seen) == 2


def test_calls_carry_the_token_the_agent_and_the_query_over_the_lean_transport():
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        seen.append(head + await reader.readexactly(length))
        body = b'{"cancel":[],"lost":[],"lease_seconds":9.0}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = WorkerClient(f"http://127.0.0.1:{port}", "secret-token")
        try:
            answer = await client.heartbeat("wk_1", Heartbeat(held=[]), 0.5)
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
        assert answer.lease_seconds == 9.0
        request = seen[0].decode()
        assert request.startswith("POST /v1/workers/wk_1:heartbeat?wait=0.5 HTTP/1.1\r\n")
        lowered = request.lower()
        assert "authorization: bearer secret-token\r\n" in lowered
        assert "user-agent: oprun-worker/" in lowered
        assert "content-type: application/json\r\n" in lowered
        assert f"host: 127.0.0.1:{port}\r\n" in lowered
        assert request.endswith('{"held":[],"status":"RUNNING"}')

    asyncio.run(main())
