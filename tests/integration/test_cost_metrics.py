"""/metrics counts HTTP bytes in and out and the database's statements and round trips."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

COST = (
    "oprun_http_request_bytes_total",
    "oprun_http_response_bytes_total",
    "oprun_database_statements_total",
    "oprun_database_round_trips_total",
)


def _costs(server) -> dict[str, float]:
    response = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )
    response.raise_for_status()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name in COST
    }


def test_a_request_and_its_answer_are_counted_in_bytes_and_database_calls(shared_server):
    before = _costs(shared_server)
    body = b'{"action": "no-such-action", "params": {"pad": "' + b"x" * 10_000 + b'"}}'
    answer = httpx.post(
        f"{shared_server.url}/v1/operations",
        content=body,
        headers={
            "Authorization": f"Bearer {shared_server.token}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert answer.status_code in (400, 404), answer.text
    after = _costs(shared_server)
    read = after[COST[0]] - before[COST[0]]
    sent = after[COST[1]] - before[COST[1]]
    # The POST and the first scrape's request; heads are a few hundred bytes each.
    assert len(body) + 200 < read < len(body) + 2_000
    head = sum(len(k) + len(v) + 4 for k, v in answer.headers.raw) + 19
    assert sent >= len(answer.content) + head
    statements = after[COST[2]] - before[COST[2]]
    assert statements >= 1  # the action lookup (and the first scrape's gauges)
    assert after[COST[3]] - before[COST[3]] > statements
