"""Poisoned input on a real server, over each backend: a 4xx in the error shape, nothing
created, and the project (and server) keep answering.

The classes: text no backend stores (NUL, lone UTF-16 surrogates) anywhere in a request;
numbers out of range for the database, NaN and Infinity; cursors holding the wrong type;
bodies over the limit however they are framed; oversized credentials and headers.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from oprun.domain.limits import MAX_REQUEST_BYTES
from oprun.testing import Server
from tests.integration.conftest import Tenant

DEFINITION = {
    "name": "resize",
    "entrypoint": "tests.integration.actions:echo",
    "parameters": [
        {"name": "width", "type": "int", "minimum": 1},
        {"name": "mode", "type": "string", "required": False, "default": "fit"},
        {"name": "extra", "type": "json", "required": False},
    ],
}


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _raw(body: str) -> dict[str, Any]:
    """A JSON body sent as written (lone surrogates as `\\ud800` escapes, NaN bare)."""
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


def _invoke(**extra: Any) -> dict[str, Any]:
    return _raw(json.dumps({"action": "resize", "parameters": {"width": 1}} | extra))


CASES: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    # (id, method, path, request kwargs, status, code, field named in the message)
    (
        "surrogate-in-parameter",
        "POST",
        "/v1/operations",
        _invoke(parameters={"width": 1, "mode": "\ud800"}),
        400,
        "VALIDATION",
        "parameters",
    ),
    (
        "surrogate-in-json-parameter-key",
        "POST",
        "/v1/operations",
        _invoke(parameters={"width": 1, "extra": {"\udc80k": 1}}),
        400,
        "VALIDATION",
        "parameters",
    ),
    (
        "nul-in-parameter",
        "POST",
        "/v1/operations",
        _invoke(parameters={"width": 1, "mode": "a\x00b"}),
        400,
        "VALIDATION",
        "parameters",
    ),
    (
        "nul-in-idempotency-key",
        "POST",
        "/v1/operations",
        _invoke(idempotency_key="k\x00"),
        400,
        "VALIDATION",
        "idempotency_key",
    ),
    (
        "surrogate-in-bulk",
        "POST",
        "/v1/operations:bulk",
        _raw(json.dumps({"invocations": [{"action": "resize", "parameters": {"mode": "\ud800"}}]})),
        400,
        "VALIDATION",
        "invocations",
    ),
    (
        "nul-in-token-name",
        "POST",
        "/v1/tokens",
        _raw(json.dumps({"name": "t\x00", "role": "viewer"})),
        400,
        "VALIDATION",
        "name",
    ),
    (
        "nul-in-capability",
        "POST",
        "/v1/workers",
        _raw(json.dumps({"name": "w", "hostname": "h", "capabilities": {"tags": ["g\x00"]}})),
        400,
        "VALIDATION",
        "capabilities",
    ),
    (
        "nul-in-action-description",
        "POST",
        "/v1/actions",
        _raw(json.dumps(DEFINITION | {"name": "other", "description": "\x00"})),
        400,
        "VALIDATION",
        "description",
    ),
    ("nul-in-filter", "GET", "/v1/operations?action=re%00size", {}, 400, "VALIDATION", "action"),
    ("nul-in-path", "GET", "/v1/operations/op_%00", {}, 400, "VALIDATION", "path"),
    (
        "version-out-of-range-in-query",
        "GET",
        "/v1/actions/resize?version=7153274562",
        {},
        400,
        "VALIDATION",
        "version",
    ),
    (
        "version-out-of-range-in-body",
        "POST",
        "/v1/operations",
        _invoke(version=7153274562),
        400,
        "VALIDATION",
        "version",
    ),
    (
        "integer-parameter-out-of-range",
        "POST",
        "/v1/operations",
        _invoke(parameters={"width": 2**70}),
        400,
        "VALIDATION",
        "parameters",
    ),
    (
        "boolean-for-an-integer",
        "POST",
        "/v1/operations",
        _invoke(version=True),
        400,
        "VALIDATION",
        "version",
    ),
    (
        "boolean-for-a-number",
        "PUT",
        "/v1/queues/default",
        _raw(json.dumps({"priority": True})),
        400,
        "VALIDATION",
        "priority",
    ),
    (
        "nan-in-body",
        "POST",
        "/v1/operations",
        _raw('{"action": "resize", "parameters": {"width": 1, "extra": NaN}}'),
        400,
        "VALIDATION",
        "parameters",
    ),
    (
        "infinity-in-body",
        "POST",
        "/v1/operations",
        _raw('{"action": "resize", "parameters": {"width": 1}, "timeout": Infinity}'),
        400,
        "VALIDATION",
        "timeout",
    ),
    (
        "cursor-of-the-wrong-type",
        "GET",
        f"/v1/operations?cursor={_cursor({'id': 1})}",
        {},
        400,
        "VALIDATION",
        "cursor",
    ),
    (
        "cursor-holding-a-nul",
        "GET",
        "/v1/operations?cursor=" + _cursor("op_\x00"),
        {},
        400,
        "VALIDATION",
        "cursor",
    ),
    (
        "version-cursor-holding-text",
        "GET",
        f"/v1/actions/resize/versions?cursor={_cursor('x')}",
        {},
        400,
        "VALIDATION",
        "cursor",
    ),
    (
        "version-cursor-out-of-range",
        "GET",
        f"/v1/actions/resize/versions?cursor={_cursor(2**64)}",
        {},
        400,
        "VALIDATION",
        "cursor",
    ),
]


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server."""
    return tenant


@pytest.fixture
def project(api: httpx.Client) -> Iterator[tuple[httpx.Client, str, str]]:
    """The tenant's client, a registered worker and one queued operation to compare with."""
    assert api.post("/v1/actions", json=DEFINITION).status_code == 201
    worker = api.post("/v1/workers", json={"name": "w1", "hostname": "h"})
    assert worker.status_code == 201, worker.text
    op = api.post("/v1/operations", json={"action": "resize", "parameters": {"width": 1}})
    assert op.status_code == 201, op.text
    yield api, worker.json()["id"], op.json()["id"]


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return dict(body["error"])


def _operations(api: httpx.Client) -> list[str]:
    listed = api.get("/v1/operations")
    assert listed.status_code == 200, listed.text
    return [op["id"] for op in listed.json()["items"]]


def _still_healthy(api: httpx.Client, worker_id: str, op_id: str) -> None:
    assert api.get("/v1/healthz").status_code == 200
    claimed = api.post(f"/v1/workers/{worker_id}:claim", json={"max": 1})
    assert claimed.status_code == 200, claimed.text
    canceled = api.post(f"/v1/operations/{op_id}:cancel")
    assert canceled.status_code == 200, canceled.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_a_4xx_that_creates_nothing_and_harms_nothing(
    project: tuple[httpx.Client, str, str],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    api, worker_id, op_id = project
    before = _operations(api)
    error = _error(api.request(method, path, **kwargs), status, code)
    assert field in error["message"] or field == error["details"].get("field"), error
    assert _operations(api) == before
    assert len(api.get("/v1/tokens").json()["items"]) == 1
    _still_healthy(api, worker_id, op_id)


def test_numbers_a_worker_reports_are_range_checked(project: tuple[httpx.Client, str, str]) -> None:
    api, worker_id, op_id = project
    claimed = api.post(f"/v1/workers/{worker_id}:claim", json={"max": 1}).json()["assignments"]
    sa = claimed[0]
    report = {
        "session_action_id": sa["session_action_id"],
        "lease_epoch": sa["lease_epoch"],
        "kind": "failed",
        "exit_code": 2**70,
    }
    response = api.post(f"/v1/workers/{worker_id}:report", json={"reports": [report]})
    assert "exit_code" in _error(response, 400, "VALIDATION")["message"]
    logs = api.get(f"/v1/operations/{op_id}/logs", params={"after": 2**63})
    assert "after" in _error(logs, 400, "VALIDATION")["message"]
    assert api.get(f"/v1/operations/{op_id}").json()["status"] == "SCHEDULED"
    _still_healthy(api, worker_id, op_id)


def test_action_output_is_kept_escaped_never_refused(
    project: tuple[httpx.Client, str, str],
) -> None:
    """A process may print anything: a NUL or a lone surrogate in a report is escaped."""
    api, worker_id, op_id = project
    sa = api.post(f"/v1/workers/{worker_id}:claim", json={"max": 1}).json()["assignments"][0]
    held = {"session_action_id": sa["session_action_id"], "lease_epoch": sa["lease_epoch"]}
    reports = [
        held | {"kind": "log", "lines": ["nul \x00 here", "raw \udcff byte", "lone \ud800"]},
        held | {"kind": "progress", "percent": 50, "message": "half\x00way \ud800"},
        held | {"kind": "succeeded", "result": {"text": "a\x00b", "\ud800": float("nan")}},
    ]
    body = json.dumps({"reports": reports})
    response = api.post(f"/v1/workers/{worker_id}:report", **_raw(body))
    assert response.status_code == 200, response.text
    assert all(o["accepted"] for o in response.json()["outcomes"]), response.text
    lines = [r["line"] for r in api.get(f"/v1/operations/{op_id}/logs").json()["items"]]
    assert lines[-3:] == ["nul \\x00 here", "raw \\xff byte", "lone \\ud800"]
    done = api.get(f"/v1/operations/{op_id}").json()
    assert done["status"] == "SUCCEEDED"
    assert done["result"] == {"text": "a\\x00b", "\\ud800": "NaN"}


def test_last_event_id_of_garbage_resumes_from_now(project: tuple[httpx.Client, str, str]) -> None:
    api, _, _ = project
    for garbage in ("\u00b2".encode("latin-1"), b"\xff\xfe", str(2**70).encode()):
        with api.stream("GET", "/v1/events", headers={"Last-Event-ID": garbage}) as stream:
            assert stream.status_code == 200
            first = next(stream.iter_text())
            assert first.startswith("retry: 1000\nid: ")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_chunked_body_over_the_limit_is_refused_unread_without_a_token(
    shared_server: Server,
) -> None:
    assert shared_server.process is not None
    pid = shared_server.process.pid
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(5 * 16):  # 5 MB in 64 KiB chunks, no Content-Length
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    before = _rss_kib(pid)
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        try:
            response = client.post("/v1/operations", content=chunks())
        except httpx.HTTPError:
            response = None  # the server may close before the client finishes sending
        if response is not None:
            _error(response, 413, "TOO_LARGE")
        assert sent < 5 * 1024 * 1024 or response is None or response.status_code == 413
        time.sleep(0.2)
        assert _rss_kib(pid) - before < 8 * 1024
        assert client.get("/v1/healthz").status_code == 200
    assert MAX_REQUEST_BYTES < 5 * 1024 * 1024


def test_oversized_credentials_and_headers_are_refused_before_any_work(
    shared_server: Server,
) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        long_token = client.get("/v1/operations", headers={"Authorization": "Bearer " + "a" * 5000})
        _error(long_token, 401, "UNAUTHENTICATED")
        try:
            huge = client.get("/v1/healthz", headers={"X-Padding": "a" * (1024 * 1024)})
            assert huge.status_code in (400, 413, 431), huge.status_code
        except httpx.HTTPError:
            pass  # the server closed the connection: refused all the same
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        assert client.get("/v1/healthz").status_code == 200


@pytest.mark.parametrize("shared_server", ["sqlite"], indirect=True)  # JSONB never took one
def test_a_poisoned_row_an_older_server_stored_reads_back_escaped(
    shared_server: Server, project: tuple[httpx.Client, str, str]
) -> None:
    """Before the rule, a lone surrogate in a parameter reached SQLite's JSON columns."""
    api, worker_id, op_id = project
    poisoned = '{"width": 1, "mode": "\\ud800"}'
    with sqlite3.connect(make_url(shared_server.database_url).database or "") as db:
        db.execute("UPDATE operations SET parameters = ? WHERE id = ?", (poisoned, op_id))
        db.execute("UPDATE tasks SET parameters = ? WHERE operation_id = ?", (poisoned, op_id))
    listed = api.get("/v1/operations")
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"][0]["parameters"]["mode"] == "\\ud800"
    claimed = api.post(f"/v1/workers/{worker_id}:claim", json={"max": 1})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["assignments"][0]["parameters"]["mode"] == "\\ud800"
    _still_healthy(api, worker_id, op_id)
