"""`oprun audit list`: the audit log as a table and as JSON; one-line errors (issue 11)."""

from __future__ import annotations

import json

import httpx

from oprun.testing import Server
from tests.e2e.conftest import Cli
from tests.e2e.test_cli import one_error_line


def test_audit_list_as_table_and_json_and_its_errors(server: Server, cli: Cli) -> None:
    made = cli("-o", "json", "tokens", "create", "ci", "--role", "viewer")
    assert made.returncode == 0, made
    created = json.loads(made.stdout)
    httpx.get(f"{server.url}/v1/operations", headers={"Authorization": "Bearer oprun_wrong"})

    table = cli("audit", "list", "--since", "1h")
    assert table.returncode == 0, table
    header = table.stdout.splitlines()[0].split()
    assert header == ["AT", "KIND", "ACTOR", "CLIENT", "SUBJECT", "REQUEST", "DETAILS"]
    assert created["token"]["id"] in table.stdout and "auth.failed" in table.stdout
    assert created["secret"] not in table.stdout and "oprun_wrong" not in table.stdout

    as_json = cli("-o", "json", "audit", "list", "--kind", "token.created", "--limit", "1")
    assert as_json.returncode == 0, as_json
    rows = json.loads(as_json.stdout)
    assert len(rows) == 1 and rows[0]["subject"] == created["token"]["id"]
    assert rows[0]["actor"]["role"] == "admin" and rows[0]["client"] == "127.0.0.1"

    denied = cli("audit", "list", token=created["secret"])
    one_error_line(denied, "ACCESS_DENIED")
    bad = cli("audit", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad
