"""An action that prints what no database stores as text still succeeds, its logs kept.

NUL characters, lone surrogates and bytes that are not UTF-8, through `ctx.log`,
`ctx.progress`, stdout and the result: on PostgreSQL (which refuses NUL in text) as on
SQLite, the worker's reports are accepted and the output is readable, escaped.
"""

from __future__ import annotations

import httpx


def test_an_action_printing_nul_surrogates_and_raw_bytes_succeeds_with_its_logs(
    server, start_worker
) -> None:
    worker = start_worker(concurrency=1)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    ) as api:
        op = api.post("/v1/operations", json={"action": "garbage"})
        assert op.status_code == 201, op.text
        done = api.get(f"/v1/operations/{op.json()['id']}:wait", params={"timeout": 30}).json()
        assert done["status"] == "SUCCEEDED", done
        assert done["result"] == {"nul": "a\\x00b", "lone": "\\ud800"}
        logs = api.get(f"/v1/operations/{done['id']}/logs")
        assert logs.status_code == 200, logs.text
        text = "\n".join(record["line"] for record in logs.json()["items"])
        for seen in ("log nul \\x00 here", "log lone \\ud800 surrogate", "print lone "):
            assert seen in text, text
        assert "raw " in text and "bytes and a nul" in text, text
        assert "\x00" not in text
        # The next operation runs as usual: nothing stuck behind a refused report.
        again = api.post("/v1/operations", json={"action": "echo", "parameters": {"value": 1}})
        waited = api.get(f"/v1/operations/{again.json()['id']}:wait", params={"timeout": 30})
        assert waited.json()["status"] == "SUCCEEDED"
    assert worker.stop(timeout=15) == 0
