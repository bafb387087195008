"""The web UI in a real headless Chromium, against a real server and real workers (SQLite).

The browser is Debian's `chromium` driven by Playwright (never `playwright install`).
Without it these tests skip with the reason; `OPRUN_REQUIRE_BROWSER=1` (set by CI)
turns that skip into a failure, as `OPRUN_REQUIRE_POSTGRES=1` does for PostgreSQL.
Screenshots of every page, desktop and phone, light and dark, land in
tests/artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from oprun.testing import Server, Worker
from tests.e2e.conftest import ROOT, TEST_ACTIONS

CHROMIUM = os.environ.get("OPRUN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("OPRUN_REQUIRE_BROWSER") == "1"
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000

pytestmark = pytest.mark.browser


@cache
def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}): pip install -e '.[dev]'"
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return f"no chromium at {CHROMIUM}: apt-get install chromium (Debian's package)"
    return None


def require_browser() -> None:
    """Skip with the reason when the browser is missing; fail instead when it is mandatory."""
    problem = browser_problem()
    if problem is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"{problem} (OPRUN_REQUIRE_BROWSER=1 makes browser tests mandatory)")
    pytest.skip(problem)


# -- one server, one worker and one browser for the whole module (keeps it fast) ----------
@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[Server]:
    """A real server on SQLite, with a worker serving tests.integration.actions:app."""
    require_browser()
    folder = tmp_path_factory.mktemp("web")
    server = Server(
        database_url=f"sqlite:///{folder / 'oprun.db'}",
        lease_seconds=5.0,
        reap_interval=0.5,
        log_path=folder / "server.log",
    ).start()
    worker = Worker(
        server,
        app="tests.integration.actions:app",
        concurrency=4,
        grace=2.0,
        log_path=folder / "worker.log",
    )
    try:
        worker.start()
        with httpx.Client(base_url=server.url, headers=bearer(server.token)) as api:
            deadline = time.monotonic() + 30
            while {a["name"] for a in api.get("/v1/actions").json()["items"]} < set(TEST_ACTIONS):
                assert time.monotonic() < deadline, "the worker did not register its actions"
                time.sleep(0.05)
        yield server
    finally:
        worker.stop(timeout=15)
        server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(web: Server) -> Iterator[httpx.Client]:
    """The API as the server's bootstrap admin."""
    with httpx.Client(base_url=web.url, headers=bearer(web.token), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def tokens(api: httpx.Client, web: Server) -> dict[str, str]:
    """A secret per role: admin (the bootstrap token), operator, viewer."""
    made = {"admin": web.token}
    for role in ("operator", "viewer"):
        response = api.post("/v1/tokens", json={"name": f"web-{role}", "role": role})
        response.raise_for_status()
        made[role] = response.json()["secret"]
    return made


@pytest.fixture(scope="module")
def browser(web: Server) -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        yield chromium
        chromium.close()


Open = Callable[..., Any]


@pytest.fixture
def open_page(browser, web: Server, tokens: dict[str, str]) -> Iterator[Open]:
    """Open a fresh browser context, signed in as `role` (None: not signed in)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(role: str | None = "admin", viewport=DESKTOP, scheme: str = "light") -> Any:
        context = browser.new_context(
            base_url=web.url, viewport=viewport, color_scheme=scheme, accept_downloads=True
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        if role is not None:
            page.goto("/sign-in")
            page.get_by_label("API token").fill(tokens[role])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/jobs")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], "the pages' scripts failed"


def invoke(api: httpx.Client, action: str, **parameters: Any) -> str:
    response = api.post("/v1/operations", json={"action": action, "parameters": parameters})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def status_of(api: httpx.Client, op_id: str) -> str:
    return str(api.get(f"/v1/operations/{op_id}").json()["status"])


def finish(api: httpx.Client, op_id: str) -> None:
    """Cancel an operation a test left running, and wait until it has ended."""
    api.post(f"/v1/operations/{op_id}:cancel")
    deadline = time.monotonic() + 20
    while status_of(api, op_id) not in ("CANCELED", "SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# -- sign-in --------------------------------------------------------------------------------
def test_sign_in_keeps_the_token_in_an_httponly_strict_cookie_and_sign_out_forgets_it(
    open_page: Open, tokens: dict[str, str]
) -> None:
    page = open_page(None)
    page.goto("/jobs")
    assert page.url.endswith("/sign-in?next=%2Fjobs")

    page.get_by_label("API token").fill("oprun_not_a_token")
    page.get_by_role("button", name="Sign in").click()
    expect()(page.get_by_role("alert")).to_contain_text("not valid")

    page.get_by_label("API token").fill(tokens["viewer"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/jobs")
    expect()(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    expect()(page.locator(".role")).to_have_text("viewer")

    (cookie,) = [c for c in page.context.cookies() if c["name"] == "oprun_session"]
    assert cookie["value"] == tokens["viewer"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert tokens["viewer"] not in page.url
    assert tokens["viewer"] not in page.evaluate("document.cookie")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in")
    assert not [c for c in page.context.cookies() if c["name"] == "oprun_session"]
    page.goto("/operations/op_anything")
    assert "/sign-in?next=" in page.url


# -- Jobs -----------------------------------------------------------------------------------
def test_jobs_row_goes_live_from_running_to_succeeded_with_a_moving_progress_bar(
    open_page: Open, api: httpx.Client
) -> None:
    page = open_page("admin")
    expect()(page.locator("#live")).to_have_attribute("data-state", "on")
    page.evaluate("window.notReloaded = true")

    op_id = invoke(api, "progress", steps=20, delay=0.1)
    row = page.locator(f"#row-{op_id}")
    row.wait_for()
    statuses: list[str] = []
    values: list[float] = []
    heights: set[float] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = row.get_attribute("data-status") or ""
        value = row.locator("progress").get_attribute("value")
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if value is not None and (not values or values[-1] != float(value)):
            values.append(float(value))
        box = row.bounding_box()
        assert box is not None
        heights.add(round(box["height"]))
        if status == "SUCCEEDED":
            break
        time.sleep(0.03)

    assert statuses[-1] == "SUCCEEDED", statuses
    assert {"QUEUED", "SCHEDULED", "RUNNING"} & set(statuses[:-1]), statuses
    moving = [v for v in values if 0 < v < 100]
    assert len(moving) >= 3, values  # the bar moved through several values, not one jump
    assert values == sorted(values), values
    expect()(row.locator(".badge")).to_have_text("SUCCEEDED")
    expect()(row.locator(".pct")).to_have_text("100%")
    expect()(row.locator(".progress-msg")).to_have_text("step 20/20\u200b")
    assert len(heights) == 1, f"the row changed height while it updated: {heights}"
    assert page.evaluate("window.notReloaded") is True


def test_jobs_filters_search_by_id_and_cursor_paging(open_page: Open, api: httpx.Client) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = [invoke(api, "echo", value=f"{marker}-{i}") for i in range(5)]
    page = open_page("admin")

    page.goto("/jobs?action=echo&limit=2")
    first = page.locator("#jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(first) == 2
    page.get_by_role("link", name="Older »").click()
    second = page.locator("#jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(second) == 2
    assert first[0] > first[1] > second[0] > second[1]  # newest first, no overlap
    assert "cursor=" in page.url and "offset" not in page.url
    expect()(page.get_by_role("link", name="« Newest")).to_be_visible()

    page.goto("/jobs")
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**status=FAILED**")
    statuses = page.locator("#jobs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert set(statuses) <= {"FAILED"}

    page.goto("/jobs")
    page.get_by_label("Operation id").fill(ids[2])
    page.get_by_label("Operation id").press("Enter")
    page.wait_for_url(f"**q={ids[2]}**")
    rows = page.locator("#jobs tbody tr")
    expect()(rows).to_have_count(1)
    assert rows.first.get_attribute("data-id") == ids[2]

    page.goto("/jobs?q=op_0000000000000000000000000000dead")
    expect()(page.get_by_role("status")).to_contain_text("No operation with id")


# -- Operation ------------------------------------------------------------------------------
def test_operator_cancels_a_running_operation_from_its_page(
    open_page: Open, api: httpx.Client, tmp_path: Path
) -> None:
    op_id = invoke(api, "once", marker_dir=str(tmp_path / "marks"), seconds=60)
    page = open_page("operator")
    page.goto(f"/operations/{op_id}")
    status = page.locator('[data-slot="status"] .badge')
    expect()(status).to_have_text("RUNNING")

    for _ in range(40):  # the button is reachable with the keyboard alone
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.opAction") == "cancel":
            break
    else:
        pytest.fail("Tab never reached the Cancel button")
    page.keyboard.press("Enter")
    expect()(status).to_have_text("CANCELED")
    expect()(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect()(page.get_by_role("button", name="Retry")).to_be_visible()
    expect()(page.locator(".timeline-h .tl-status")).to_contain_text(["CANCELING", "CANCELED"])
    assert status_of(api, op_id) == "CANCELED"


def test_operation_page_follows_logs_live_and_searches_and_downloads_them(
    open_page: Open, api: httpx.Client
) -> None:
    op_id = invoke(api, "progress", steps=40, delay=0.1)
    page = open_page("viewer")
    page.goto(f"/operations/{op_id}")
    lines = page.locator("#log .line")
    at_load = lines.count()

    expect()(page.locator("#log")).to_contain_text("did step 40")
    expect()(page.locator("#log")).to_contain_text("printed to stdout")
    assert at_load < 40, "the lines must arrive while the page is open"
    assert lines.count() == 41
    gap = page.locator("#log").evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight")
    assert gap < 30, "follow keeps the newest line in view"
    expect()(page.locator('[data-slot="status"] .badge')).to_have_text("SUCCEEDED")

    page.get_by_label("Search logs").fill("step 3")
    expect()(page.locator("#log .line:not(.miss)")).to_have_count(11)  # 3 and 30..39
    expect()(page.locator("#log-count")).to_have_text("11 of 41 lines match “step 3”")
    assert page.locator("#log mark").count() == 11

    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    text = Path(download.value.path()).read_text()
    assert download.value.suggested_filename == f"{op_id}.log"
    assert len(text.splitlines()) == 41
    assert "stdout did step 40" in text


def test_viewer_sees_no_cancel_button_and_a_forced_cancel_gets_403(
    open_page: Open, api: httpx.Client, tmp_path: Path
) -> None:
    op_id = invoke(api, "once", marker_dir=str(tmp_path / "marks"), seconds=60)
    try:
        page = open_page("viewer")
        page.goto(f"/operations/{op_id}")
        expect()(page.locator('[data-slot="status"] .badge')).to_have_text("RUNNING")
        expect()(page.locator("[data-op-action]")).to_have_count(0)

        answer = page.evaluate(
            """async (id) => {
                const r = await fetch(`/v1/operations/${id}:cancel`, {method: "POST"});
                return {status: r.status, body: await r.json()};
            }""",
            op_id,
        )
        assert answer["status"] == 403
        assert answer["body"]["error"]["code"] == "ACCESS_DENIED"
        assert status_of(api, op_id) == "RUNNING"
    finally:
        finish(api, op_id)


def test_a_cookie_post_from_another_origin_is_refused(
    open_page: Open, api: httpx.Client, tmp_path: Path
) -> None:
    op_id = invoke(api, "once", marker_dir=str(tmp_path / "marks"), seconds=60)
    try:
        page = open_page("admin")
        for headers in ({"Origin": "http://evil.example"}, {}):
            response = page.request.post(f"/v1/operations/{op_id}:cancel", headers=headers)
            assert response.status == 403, response.text()
            assert "cross-site" in response.json()["error"]["message"]
        assert status_of(api, op_id) in ("QUEUED", "SCHEDULED", "RUNNING")
    finally:
        finish(api, op_id)


def test_another_projects_operation_id_gives_the_not_found_page(
    open_page: Open, api: httpx.Client
) -> None:
    made = api.post("/v1/projects", json={"name": f"other-{uuid.uuid4().hex[:6]}"})
    other = bearer(made.json()["token"])
    definition = {"name": "elsewhere", "entrypoint": "somewhere.else:run"}
    assert api.post("/v1/actions", json=definition, headers=other).status_code == 201
    foreign = api.post("/v1/operations", json={"action": "elsewhere"}, headers=other).json()["id"]

    page = open_page("admin")
    for path in (f"/operations/{foreign}", f"/operations/{foreign}/logs.txt"):
        response = page.goto(path)
        assert response is not None and response.status == 404
        expect()(page.get_by_role("heading", level=1)).to_have_text("Not found")
    page.goto(f"/jobs?q={foreign}")
    expect()(page.get_by_role("status")).to_contain_text("No operation with id")


# -- queues ---------------------------------------------------------------------------------
def test_queues_page_shows_each_queues_depth_running_and_last_hours_throughput(
    open_page: Open, api: httpx.Client
) -> None:
    # A queue no worker serves, so its work waits where the page can count it.
    parked = {"name": "parked", "entrypoint": "nowhere:run", "queue": "backlog"}
    assert api.post("/v1/actions", json=parked).status_code in (200, 201)
    waiting = [invoke(api, "parked") for _ in range(3)]
    done = invoke(api, "progress", steps=2, delay=0.01)
    deadline = time.monotonic() + 20
    while status_of(api, done) != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        listed = {q["name"]: q for q in api.get("/v1/queues").json()["items"]}
        assert listed["backlog"]["depth"] == 3 and listed["backlog"]["running"] == 0
        assert listed["default"]["succeeded"] >= 1 and len(listed["default"]["throughput"]) == 60

        page = open_page("viewer")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Queues").click()
        page.wait_for_url("**/queues")
        expect()(page.get_by_role("heading", level=1)).to_have_text("Queues")
        backlog = page.locator("tr[data-queue=backlog]")
        expect()(backlog.locator("td[data-label=Depth]")).to_have_text("3")
        expect()(backlog.locator("td[data-label=Running]")).to_have_text("0")
        chart = page.locator("tr[data-queue=default]").get_by_role("img")
        expect()(chart).to_have_attribute(
            "aria-label", re.compile(r"\d+ tasks? ended in the last hour")
        )
    finally:
        for op_id in waiting:
            finish(api, op_id)
    page.reload()
    expect()(backlog.locator("td[data-label=Depth]")).to_have_text("0")
    expect()(backlog.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile("3 tasks ended in the last hour")
    )


def test_audit_page_is_in_the_admins_nav_only_and_shows_who_did_what(
    open_page: Open, api: httpx.Client
) -> None:
    made = api.post("/v1/tokens", json={"name": "<b>audited</b>", "role": "viewer"})
    assert made.status_code == 201, made.text
    page = open_page("admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    page.wait_for_url("**/audit")
    expect()(page.get_by_role("heading", level=1)).to_have_text("Audit")
    row = page.locator("tr", has_text=made.json()["token"]["id"])
    expect()(row.locator("td[data-label=Kind]")).to_have_text("token.created")
    expect()(row.locator("td[data-label=Details]")).to_contain_text("<b>audited</b>")
    assert made.json()["secret"] not in page.content()
    viewer = open_page("viewer")
    expect()(viewer.get_by_role("navigation", name="Main").get_by_role("link")).to_have_count(4)


# -- every page, desktop and phone, light and dark ------------------------------------------
PAGES_WITHOUT_SESSION = {"sign-in": "/sign-in"}


def check_page_basics(page: Any, width: int) -> None:
    """What every page owes a person: one h1, labelled controls, no sideways scroll."""
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_screenshots_of_every_page_on_desktop_and_phone_in_light_and_dark(
    open_page: Open, api: httpx.Client, tmp_path: Path
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    done_id = invoke(api, "progress", steps=8, delay=0.02)
    failed_id = invoke(api, "fail", message="the input file is corrupt")
    running_id = invoke(api, "once", marker_dir=str(tmp_path / "marks"), seconds=60)
    try:
        deadline = time.monotonic() + 30
        while status_of(api, done_id) != "SUCCEEDED" or status_of(api, running_id) != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pages = {
            "jobs": "/jobs",
            "operation-running": f"/operations/{running_id}",
            "operation-succeeded": f"/operations/{done_id}",
            "operation-failed": f"/operations/{failed_id}",
            "actions": "/actions",
            "action": "/actions/progress",
            "workers": "/workers",
            "queues": "/queues",
            "audit": "/audit",
            "not-found": "/operations/op_0000000000000000000000000000dead",
        }
        for scheme in ("light", "dark"):
            for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                page = open_page(None, viewport=viewport, scheme=scheme)
                page.goto("/sign-in")
                check_page_basics(page, viewport["width"])
                page.screenshot(path=SHOTS / f"sign-in-{size}-{scheme}.png", full_page=True)
                page.get_by_label("API token").fill(api.headers["Authorization"].split()[1])
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url("**/jobs")
                for name, path in pages.items():
                    page.goto(path)
                    if page.locator("#live").count():
                        expect()(page.locator("#live")).to_have_attribute("data-state", "on")
                    page.wait_for_timeout(250)
                    check_page_basics(page, viewport["width"])
                    page.screenshot(path=SHOTS / f"{name}-{size}-{scheme}.png", full_page=True)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        finish(api, running_id)


def test_page_scripts_format_ages_and_durations_as_the_server_does(open_page: Open) -> None:
    from oprun.web import views

    page = open_page("viewer")
    samples = [0, 0.035, 0.5, 1.5, 9.96, 12.7, 59, 61, 250, 3599, 3720, 86399, 90000, 200000]
    ages, durations = page.evaluate("(xs) => [xs.map(oprun.age), xs.map(oprun.duration)]", samples)
    assert ages == [views.age(x) for x in samples]
    assert durations == [views.duration(x) for x in samples]


# -- API docs -------------------------------------------------------------------------------
def test_api_docs_render_offline_under_the_uis_csp(open_page: Open, web: Server) -> None:
    page = open_page(role=None)
    refused: list[str] = []
    outside: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(web.url) else None,
    )
    page.context.route(
        re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: route.abort()
    )  # offline: anything not from the server fails
    page.goto("/docs")
    expect()(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator(".swagger-ui .opblock").count() >= 32
    assert refused == [], refused
    assert outside == [], outside
