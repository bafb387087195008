"""The web UI without a browser: sessions, CSRF, page rules, headers, layout maths, colours."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from oprun.domain.models import Operation, SessionAction, StatusRecord
from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import Store, open_store, schema
from oprun.web import views
from oprun.web.session import safe_next
from oprun.web.templating import STATIC_DIR

ADMIN = "oprun_web_unit_admin"
SAME = {"Origin": "http://testserver"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'oprun.db'}")
    bootstrap(store, ADMIN)
    yield store
    store.close()


@pytest.fixture
def services(store: Store, tmp_path: Path) -> Services:
    url = f"sqlite:///{tmp_path / 'oprun.db'}"
    return Services.build(store, Settings(database_url=url, bootstrap_token=ADMIN))


class Client:
    """A synchronous client over the app in this process (no server, no browser)."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self.cookies = self._client.cookies

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.get(url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.post(url, **kw))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture
def client(services: Services) -> Iterator[Client]:
    web = Client(build_app(services, run_reaper=False))
    yield web
    web.close()


def make_token(client: Client, role: str) -> str:
    response = client.post(
        "/v1/tokens",
        json={"name": f"unit-{role}", "role": role},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


# -- sessions -----------------------------------------------------------------------------
def test_pages_without_a_session_go_to_sign_in_and_come_back(client: Client) -> None:
    response = client.get("/operations/op_x?tab=logs")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=%2Foperations%2Fop_x%3Ftab%3Dlogs"
    assert client.get("/").headers["location"] == "/jobs"


def test_sign_in_sets_an_httponly_strict_cookie_and_redirects_to_a_local_page(
    client: Client,
) -> None:
    response = client.post("/sign-in", data={"token": ADMIN, "next": "/workers"}, headers=SAME)
    assert response.status_code == 303
    assert response.headers["location"] == "/workers"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"oprun_session={ADMIN};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert ADMIN not in response.headers["location"]


def test_sign_in_refuses_a_bad_token_and_a_form_from_another_site(client: Client) -> None:
    bad = client.post("/sign-in", data={"token": "oprun_nope"}, headers=SAME)
    assert bad.status_code == 401
    assert "not valid" in bad.text
    assert "set-cookie" not in bad.headers
    foreign = client.post(
        "/sign-in", data={"token": ADMIN}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert "set-cookie" not in foreign.headers


@pytest.mark.parametrize(
    ("wanted", "went"),
    [
        ("/actions/x?version=2", "/actions/x?version=2"),
        ("//evil.example/", "/jobs"),
        ("https://evil.example/", "/jobs"),
        ("/\\evil.example", "/jobs"),
        ("/sign-out", "/jobs"),
        (None, "/jobs"),
    ],
)
def test_sign_in_only_returns_to_pages_of_this_server(wanted: str | None, went: str) -> None:
    assert safe_next(wanted) == went


def test_sign_out_forgets_the_cookie(client: Client) -> None:
    client.cookies.set("oprun_session", ADMIN)
    response = client.post("/sign-out", headers=SAME)
    assert response.status_code == 303
    assert 'oprun_session=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]


# -- CSRF on the API -----------------------------------------------------------------------
def test_cookie_authenticated_writes_need_this_servers_origin(client: Client) -> None:
    client.cookies.set("oprun_session", ADMIN)
    for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
        response = client.post("/v1/tokens", json={"name": "x", "role": "viewer"}, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"]["details"] == {"reason": "origin"}
    same = client.post("/v1/tokens", json={"name": "x", "role": "viewer"}, headers=SAME)
    assert same.status_code == 201
    by_referer = client.post(
        "/v1/tokens",
        json={"name": "y", "role": "viewer"},
        headers={"Referer": "http://testserver/operations/op_1"},
    )
    assert by_referer.status_code == 201
    assert client.get("/v1/tokens").status_code == 200  # reads need no Origin


def test_bearer_requests_are_not_subject_to_the_origin_check(client: Client) -> None:
    response = client.post(
        "/v1/tokens",
        json={"name": "x", "role": "viewer"},
        headers={"Authorization": f"Bearer {ADMIN}", "Origin": "http://elsewhere.example"},
    )
    assert response.status_code == 201


# -- pages follow the API's rules ----------------------------------------------------------
def test_a_viewer_gets_pages_but_no_cancel_or_retry_buttons(client: Client) -> None:
    viewer = make_token(client, "viewer")
    client.cookies.set("oprun_session", viewer)
    for path in ("/jobs", "/actions", "/workers", "/queues"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "data-op-action" not in page.text
    assert client.get("/operations/op_0000").status_code == 404


def test_pages_carry_security_headers_and_no_inline_script(client: Client) -> None:
    client.cookies.set("oprun_session", ADMIN)
    page = client.get("/jobs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
    assert " style=" not in page.text
    static = client.get("/static/app.css")
    assert static.status_code == 200 and "prefers-color-scheme: dark" in static.text


def test_a_bad_filter_is_a_400_page_not_a_crash(client: Client) -> None:
    client.cookies.set("oprun_session", ADMIN)
    page = client.get("/jobs?status=NOPE")
    assert page.status_code == 400
    assert "is not one of" in page.text
    assert client.get("/jobs?cursor=%%%").status_code == 400


def test_the_api_keeps_its_json_errors(client: Client) -> None:
    response = client.get("/v1/operations/op_missing", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


# -- what the pages compute ----------------------------------------------------------------
def op(status: str) -> Operation:
    """An operation record in `status` (only what the views read matters)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    provenance = {
        "action": {"name": "a", "version": 1, "digest": "sha256:0", "project_id": "prj_1"},
        "source": {"source_id": "tok_1"},
    }
    return Operation.model_validate(
        {
            "id": f"op_{status.lower()}",
            "project_id": "prj_1",
            "kind": "a",
            "action_id": "act_1",
            "action_version": 1,
            "queue": "default",
            "status": status,
            "created_by": "admin",
            "created_at": now,
            "updated_at": now,
            "provenance": provenance,
        }
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "0 s"), (12, "12 s"), (125, "2 min"), (7200, "2 h"), (200000, "2 d")],
)
def test_age(seconds: float, text: str) -> None:
    assert views.age(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.035, "35 ms"), (4.25, "4.2 s"), (12.7, "12 s"), (250, "4 min 10 s"), (3720, "1 h 2 min")],
)
def test_duration(seconds: float, text: str) -> None:
    assert views.duration(seconds) == text


def test_timeline_places_each_status_with_the_time_since_the_previous_one() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        StatusRecord(status="QUEUED", at=t0, detail="created"),
        StatusRecord(status="RUNNING", at=t0 + timedelta(seconds=2)),
        StatusRecord(status="FAILED", at=t0 + timedelta(seconds=2, milliseconds=40)),
    ]
    done = views.timeline(history, ongoing=False)
    assert [n.status for n in done.nodes] == ["QUEUED", "RUNNING", "FAILED"]
    assert [n.gap for n in done.nodes] == ["", "+2.0 s", "+40 ms"]
    assert [n.tone for n in done.nodes] == ["neutral", "info", "bad"]
    assert done.nodes[0].x < done.nodes[1].x < done.nodes[2].x <= done.width
    assert done.tail_x == done.nodes[-1].x
    assert "FAILED at 2026-01-01 00:00:02 UTC" in done.summary
    going = views.timeline(history[:2], ongoing=True)
    assert going.tail_x > going.nodes[-1].x
    assert going.v_height > going.nodes[-1].y


def test_sparkline_rate_counts_finished_runs_and_draws_the_newest_on_the_right() -> None:
    runs = [op("SUCCEEDED"), op("RUNNING"), op("FAILED"), op("SUCCEEDED"), op("SUCCEEDED")]
    spark = views.sparkline(runs, slots=20)
    assert (spark.succeeded, spark.finished, spark.rate) == (3, 4, "75%")
    assert spark.width == 20 * views.SPARK_BAR
    assert spark.bars[-1].label.endswith("SUCCEEDED") and spark.bars[-1].x == 19 * views.SPARK_BAR
    assert views.sparkline([]).summary == "no runs yet"


# -- colours: WCAG contrast in both schemes ------------------------------------------------
def _colours(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", block))


def _contrast(a: str, b: str) -> float:
    def lum(colour: str) -> float:
        rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted([lum(a), lum(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_and_status_colours_have_enough_contrast_in_light_and_dark() -> None:
    css = (STATIC_DIR / "app.css").read_text()
    dark_at = css.index("@media (prefers-color-scheme: dark)")
    light = _colours(css[:dark_at])
    dark = {**light, **_colours(css[dark_at : css.index("*, *::before")])}
    for scheme in (light, dark):
        text = [("text", "bg"), ("text", "surface"), ("muted", "surface"), ("muted", "bg")]
        text += [("accent", "surface"), ("accent-text", "accent"), ("muted", "code-bg")]
        text += [(f"{t}-fg", f"{t}-bg") for t in ("neutral", "info", "ok", "bad", "warn", "muted")]
        for fg, bg in text:
            assert _contrast(scheme[fg], scheme[bg]) >= 4.5, (fg, bg)
        for tone in ("neutral", "info", "ok", "bad", "warn", "muted"):
            assert _contrast(scheme[f"{tone}-bar"], scheme["surface"]) >= 3.0, tone
        assert _contrast("#ffffff", scheme["danger"]) >= 4.5


def test_throughput_chart_scales_to_the_peak_and_draws_the_current_minute_on_the_right() -> None:
    from datetime import UTC, datetime

    counts = [0] * 60
    counts[0], counts[30], counts[59] = 1, 100, 5
    chart = views.throughput_chart(counts, datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    assert [b.x for b in chart.bars] == [0, 30 * views.THROUGHPUT_BAR, 59 * views.THROUGHPUT_BAR]
    assert chart.bars[1].height == views.THROUGHPUT_HEIGHT - 1  # the peak fills the height
    assert chart.bars[0].height == 2  # a single task stays visible
    assert chart.bars[2].label == "11:59:00 UTC: 5 ended"
    assert chart.total == 106 and "at most 100 in one minute, 5 in the last minute" in chart.summary
    empty = views.throughput_chart([0] * 60, datetime(2026, 1, 1, tzinfo=UTC))
    assert empty.bars == [] and empty.summary == "no tasks ended in the last hour"


# -- session actions on the operation page -------------------------------------------------
def sa(sa_id: str, session: str, definition: dict[str, Any], status: str = "SUCCEEDED"):
    """A session action record (only what the views read matters)."""
    return SessionAction.model_validate(
        {
            "id": sa_id,
            "session_id": session,
            "operation_id": "op_1",
            "task_id": definition.get("taskRun", {}).get("taskId"),
            "worker_id": f"wk_{session}",
            "status": status,
            "lease_epoch": 1,
            "definition": definition,
        }
    )


def run(task: str, **params: str) -> dict[str, Any]:
    tagged = {k: {"int": v} for k, v in params.items()}
    return {"taskRun": {"taskId": task, "stepId": "render", "parameters": tagged}}


def test_session_actions_are_grouped_by_session_each_in_the_order_it_ran() -> None:
    actions = [
        sa("sa_05", "s2", run("task_3", frame="3")),
        sa("sa_01", "s1", {"envEnter": {"environmentId": "JobEnv"}}),
        sa("sa_02", "s2", {"syncInputJobAttachments": {}}),
        sa("sa_03", "s1", run("task_1", frame="1")),
        sa("sa_04", "s1", run("task_2", frame="2")),
        sa("sa_06", "s1", {"envExit": {"environmentId": "JobEnv"}}, "RUNNING"),
    ]
    groups = views.sessions(actions)
    assert [g.session_id for g in groups] == ["s1", "s2"]
    assert [r.sa.id for r in groups[0].rows] == ["sa_01", "sa_03", "sa_04", "sa_06"]
    assert [str(r.what) for r in groups[0].rows] == [
        "envEnter JobEnv",
        "taskRun render frame=1",
        "taskRun render frame=2",
        "envExit JobEnv",
    ]
    assert groups[0].worker_id == "wk_s1"
    assert groups[0].summary == "4 actions: 1 env enter, 2 task runs, 1 env exit"
    assert groups[1].summary == "2 actions: 1 sync inputs, 1 task run"
    assert views.sessions([]) == []


def test_operation_page_names_each_session_actions_kind_session_by_session(
    client: Client, store: Store
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    definition = {
        "name": "render",
        "entrypoint": "m:f",
        "parameters": [{"name": "frame", "type": "int"}],
    }
    assert client.post("/v1/actions", json=definition, headers=admin).status_code == 201
    op_id = client.post(
        "/v1/operations", json={"action": "render", "parameters": {"frame": 7}}, headers=admin
    ).json()["id"]
    worker = client.post("/v1/workers", json={"name": "w", "hostname": "h"}, headers=admin).json()
    claimed = client.post(f"/v1/workers/{worker['id']}:claim", json={"max": 1}, headers=admin)
    (assignment,) = claimed.json()["assignments"]
    listed = client.get("/v1/session-actions", params={"operation_id": op_id}, headers=admin)
    (task_run,) = listed.json()["items"]
    # Environment actions of the same session, as the worker reports them (written directly).
    with store.engine.begin() as conn:
        for n, definition in enumerate(
            [{"envEnter": {"environmentId": "JobEnv"}}, {"envExit": {"environmentId": "JobEnv"}}]
        ):
            conn.execute(
                insert(schema.session_actions),
                {
                    "id": "sa_" + ("0" if n == 0 else "f") * 32,  # before and after the run
                    "session_id": task_run["session_id"],
                    "project_id": client.get("/v1/projects/current", headers=admin).json()["id"],
                    "operation_id": op_id,
                    "task_id": None,
                    "worker_id": worker["id"],
                    "status": "SUCCEEDED",
                    "lease_epoch": 0,
                    "definition": definition,
                    "created_at": 0.0,
                },
            )
    client.cookies.set("oprun_session", ADMIN)
    page = client.get(f"/operations/{op_id}")
    assert page.status_code == 200
    table = page.text[page.text.index('data-slot="attempts"') :]
    table = table[: table.index("</table>")]
    assert table.count('<tbody class="session"') == 1
    assert (
        '<th scope="rowgroup"' in table
        and "3 actions: 1 env enter, 1 task run, 1 env exit" in table
    )
    kinds = re.findall(r'<tr data-kind="(\w+)">', table)
    assert kinds == ["envEnter", "taskRun", "envExit"]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", table))
    assert "Env enter JobEnv" in text and "Env exit JobEnv" in text
    assert "Task run main frame=7" in text
    assert assignment["task_id"] in table  # the task run's title names its task
    assert " style=" not in page.text
    live = client.get(f"/operations/{op_id}/live")
    assert live.status_code == 200 and "Env enter" in live.text
