"""An action that prints what no database stores as text still succeeds, its logs kept.

NUL characters, lone surrogates and bytes that are not UTF-8, through `ctx.log`,
`ctx.progress`, stdout and the result, from a python action and an OpenJD command: on
PostgreSQL (which refuses NUL in text) as on SQLite, the worker's reports are accepted
and the output is readable, escaped: a byte that is not UTF-8 as `\\xNN`, a character
split across two reads whole. Escaped output still holds to its limits: cut, never
refused, never inside an escape.
"""

from __future__ import annotations

import sys
import time

import httpx

from oprun.domain.limits import MAX_LOG_LINE_BYTES

RAW_BYTES = (
    "import sys, time; out = sys.stdout.buffer; "
    "out.write(b'jd \\x80 and \\xff, split \\xe2\\x82'); out.flush(); time.sleep(0.2); "
    "out.write(b'\\xac here\\n'); out.write(b'\\x80' * 20000 + b'\\n'); out.flush()"
)
"""An OpenJD command's script: raw bytes, a split character, a long line of raw bytes."""


def _wait(api: httpx.Client, op_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        done = api.get(f"/v1/operations/{op_id}:wait", params={"timeout": 30}).json()
        if done["status"] in ("SUCCEEDED", "FAILED", "CANCELED") or time.monotonic() > deadline:
            return dict(done)


def _lines(api: httpx.Client, op_id: str) -> list[str]:
    logs = api.get(f"/v1/operations/{op_id}/logs", params={"limit": 500})
    assert logs.status_code == 200, logs.text
    return [record["line"] for record in logs.json()["items"]]


def _whole_escapes_within_the_limit(line: str, escape: str) -> None:
    assert len(line.encode()) <= MAX_LOG_LINE_BYTES
    assert line == escape * (len(line) // len(escape)) and len(line) > MAX_LOG_LINE_BYTES // 2


def test_an_action_printing_nul_surrogates_and_raw_bytes_succeeds_with_its_logs(
    server, start_worker
) -> None:
    worker = start_worker(concurrency=1)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    ) as api:
        op = api.post("/v1/operations", json={"action": "garbage"})
        assert op.status_code == 201, op.text
        done = _wait(api, op.json()["id"])
        assert done["status"] == "SUCCEEDED", done
        assert done["result"] == {"nul": "a\\x00b", "lone": "\\ud800"}
        assert done["progress"]["message"] == "\\x00" * 1024, done["progress"]
        lines = _lines(api, done["id"])
        text = "\n".join(lines)
        for seen in (
            "log nul \\x00 here",
            "log lone \\ud800 surrogate",
            "print lone \\xff surrogate",
            "raw \\xff\\xfe bytes and a nul \\x00",
            "raw \\x80 and \\xff, split \u20ac here",
        ):
            assert seen in lines, text
        assert "\x00" not in text and "\ufffd" not in text
        _whole_escapes_within_the_limit(
            next(x for x in lines if x.startswith("\\x80\\x80")), "\\x80"
        )
        _whole_escapes_within_the_limit(
            next(x for x in lines if x.startswith("\\x00\\x00")), "\\x00"
        )

        # An OpenJD command's output: the same escapes (openjd-sessions writes `\xNN`).
        command = {
            "name": "rawbytes",
            "kind": "openjd",
            "command": [sys.executable, "-c", RAW_BYTES],
        }
        assert api.post("/v1/actions", json=command).status_code == 201
        op = api.post("/v1/operations", json={"action": "rawbytes"})
        done = _wait(api, op.json()["id"])
        assert done["status"] == "SUCCEEDED", done
        lines = _lines(api, done["id"])
        assert "jd \\x80 and \\xff, split \u20ac here" in lines, lines
        _whole_escapes_within_the_limit(
            next(x for x in lines if x.startswith("\\x80\\x80")), "\\x80"
        )

        # The next operation runs as usual: nothing stuck behind a refused report.
        again = api.post("/v1/operations", json={"action": "echo", "parameters": {"value": 1}})
        waited = api.get(f"/v1/operations/{again.json()['id']}:wait", params={"timeout": 30})
        assert waited.json()["status"] == "SUCCEEDED"
    assert worker.stop(timeout=15) == 0
