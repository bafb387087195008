"""A scripted stand-in for the server, used only as the transport of the SDK's unit tests.

Real-server tests live in tests/integration; here `httpx.MockTransport` answers
with what each test scripts, and records what the SDK sent.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import httpx

from oprun.sdk import AsyncClient, Client

URL = "http://oprun.test"
TOKEN = "tok-secret-value"
NOW = "2025-01-01T00:00:00Z"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def op_json(op_id: str = "op_1", status: str = "QUEUED", **fields: Any) -> dict[str, Any]:
    """A valid operation as the API sends it."""
    body: dict[str, Any] = {
        "id": op_id,
        "project_id": "prj_1",
        "kind": "resize",
        "action_id": "act_1",
        "action_version": 1,
        "queue": "default",
        "status": status,
        "created_by": "alice",
        "created_at": NOW,
        "updated_at": NOW,
        "provenance": {
            "action": {"name": "resize", "version": 1, "digest": "sha256:x", "project_id": "prj_1"},
            "source": {"source_type": "Manual", "source_id": "alice"},
        },
    }
    body.update(fields)
    return body


def action_json(name: str = "resize", version: int = 1) -> dict[str, Any]:
    """A valid saved action."""
    return {
        "id": "act_1",
        "version_id": f"actv_{version}",
        "project_id": "prj_1",
        "name": name,
        "version": version,
        "latest_version": version,
        "digest": "sha256:x",
        "definition": {
            "name": name,
            "entrypoint": "pkg.mod:fn",
            "parameters": [{"name": "width", "type": "int"}],
        },
        "created_at": NOW,
    }


def log_json(seq: int, line: str, op_id: str = "op_1") -> dict[str, Any]:
    """A valid log record."""
    return {"seq": seq, "operation_id": op_id, "at": NOW, "line": line}


def ok(body: Any, status: int = 200, **headers: str) -> httpx.Response:
    """A JSON answer."""
    return httpx.Response(status, json=body, headers=headers)


def error(code: str, status: int, message: str = "nope", **details: Any) -> httpx.Response:
    """An answer in the one error shape."""
    return ok({"error": {"code": code, "message": message, "details": details}}, status)


class Stub:
    """Answers requests by method and path from scripted queues; the last answer repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], deque[Answer]] = defaultdict(deque)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def on(self, method: str, path: str, *answers: Answer) -> Stub:
        """Script the answers to ``method path``, in order."""
        self.routes[(method, path)].extend(answers)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return error("NOT_FOUND", 404, f"no route {request.method} {request.url.path}")
        answer = queue.popleft() if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """The requests sent to ``method path``."""
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def client(self, **kwargs: Any) -> Client:
        """A `Client` whose requests reach this stub; it records sleeps instead of sleeping."""
        client = Client(URL, TOKEN, transport=httpx.MockTransport(self), **kwargs)
        client._sleep = self.sleeps.append
        return client

    def async_client(self, **kwargs: Any) -> AsyncClient:
        """An `AsyncClient` whose requests reach this stub."""
        client = AsyncClient(URL, TOKEN, transport=httpx.MockTransport(self), **kwargs)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        client._sleep = sleep
        return client


def body(request: httpx.Request) -> Any:
    """The JSON body a request carried."""
    return json.loads(request.content)
