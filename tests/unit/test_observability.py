"""Request ids, log formats, redaction and /metrics, over the app in this process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount, Route

from oprun import logs
from oprun.api.observability import UNMATCHED, request_id_of, route_of
from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store

ADMIN = "oprun_observability_unit_admin"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Log lines, as JSON, with the access log on; the root logger as it was after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("json", access_log=True, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(logs.ACCESS_LOGGER).setLevel(logging.NOTSET)


def _services(tmp_path: Path, **settings) -> Services:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, ADMIN)
    return Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN, **settings))


def _get(services: Services, path: str, **kw) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(services, run_reaper=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path, **kw)

    try:
        return asyncio.run(call())
    finally:
        services.close()


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"abc-123", True),
        (b"trace:span/1+2=3@host_x.y", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"two words", False),
        (b'quo"te', False),
        (b"\xff\xfe", False),
        (None, False),
    ],
)
def test_a_request_id_is_kept_only_when_it_is_a_short_plain_token(header, kept):
    found = request_id_of(header)
    if kept:
        assert found == header.decode()
    else:
        assert len(found) == 32 and int(found, 16) >= 0


def test_route_labels_are_templates():
    assert route_of({}) == UNMATCHED
    assert route_of({"route": Route("/v1/x/{id}", lambda r: None)}) == "/v1/x/{id}"
    assert route_of({"route": Mount("/static", app=lambda s, r, w: None)}) == "/static/{path}"


def test_text_lines_carry_the_request_context_and_fields():
    record = logging.LogRecord("oprun.api", logging.INFO, __file__, 1, "event=%s", ("x",), None)
    record.fields = {"status": 200, "note": "two words"}
    context = logs.RequestContext(
        "rid-1", project_id="prj_1", scope={"path_params": {"operation_id": "op_1"}}
    )
    with logs.bound_request(context):
        line = logs.TextFormatter().format(record)
    assert line.endswith(
        "INFO oprun.api event=x request_id=rid-1 project_id=prj_1 operation_id=op_1 "
        'status=200 note="two words"'
    )
    assert line[:4].isdigit() and line.split(" ")[0].endswith("Z")
    assert "request_id" not in logs.TextFormatter().format(record)  # outside the request


def test_json_lines_are_one_object_with_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "oprun", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    body = json.loads(logs.JsonFormatter().format(record))
    assert body["level"] == "error" and body["logger"] == "oprun" and body["message"] == "failed"
    assert "ValueError: boom" in body["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer oprun_abc",
        "header bearer sekrit",
        "token oprun_" + "Zx9" * 15,
        "oprun_test_0123456789abcdef0123456789abcdef",
        "x BEARER%20sekrit",
        "BeArEr sekrit",
    ],
)
def test_secrets_are_redacted_from_every_line(text):
    record = logging.LogRecord("oprun", logging.WARNING, __file__, 1, "%s", (text,), None)
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        line = formatter.format(record)
        assert logs.REDACTED in line
        assert "sekrit" not in line and "oprun_abc" not in line and "Zx9Zx9" not in line
    # Metric and logger names are not secrets.
    assert logs.redact("oprun_http_request_duration_seconds_bucket") == (
        "oprun_http_request_duration_seconds_bucket"
    )


def test_configure_replaces_its_handler_and_refuses_unknown_formats(captured):
    logs.configure("text", stream=captured)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "oprun"]
    assert len(ours) == 1 and isinstance(ours[0].formatter, logs.TextFormatter)
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("xml")  # type: ignore[arg-type]


def test_the_access_line_names_route_status_request_and_project(tmp_path, captured):
    response = _get(
        _services(tmp_path),
        "/v1/operations/op_missing",
        headers={"Authorization": f"Bearer {ADMIN}", "X-Request-ID": "unit-1"},
    )
    assert response.status_code == 404 and response.headers["x-request-id"] == "unit-1"
    (line,) = [json.loads(x) for x in captured.getvalue().splitlines() if '"oprun.access"' in x]
    assert line["route"] == "/v1/operations/{operation_id}" and line["status"] == 404
    assert line["request_id"] == "unit-1" and line["operation_id"] == "op_missing"
    assert line["project_id"].startswith("prj_") and line["path"] == "/v1/operations/op_missing"


def test_metrics_are_open_with_the_public_flag_and_need_a_token_without(tmp_path):
    closed = _get(_services(tmp_path), "/metrics")
    assert closed.status_code == 401
    opened = _get(_services(tmp_path, metrics_public=True), "/metrics")
    assert opened.status_code == 200
    names = {f.name for f in text_string_to_metric_families(opened.text)}
    assert {"oprun_http_requests", "oprun_operations", "oprun_database_up"} <= names
    assert "oprun_db_pool_connections" in names and "process_cpu_seconds" in names


def test_the_access_log_can_be_off_or_include_the_probes(tmp_path, captured):
    _get(_services(tmp_path, access_log="off"), "/v1/operations")
    _get(_services(tmp_path), "/v1/healthz")
    assert '"oprun.access"' not in captured.getvalue()
    _get(_services(tmp_path, access_log="all"), "/v1/healthz")
    assert '"route": "/v1/healthz"' in captured.getvalue()


@given(
    st.lists(
        st.sampled_from(
            ["bearer ", "BEARER%20", "Bearer", "oprun_", "OPRUN_", " ", "=", "Z9" * 20]
        ),
        max_size=10,
    ).map("".join)
)
def test_a_line_skipped_before_the_pattern_is_one_it_would_leave_as_it_is(text):
    assert logs.redact(text) == logs._SECRET.sub(logs.REDACTED, text)
