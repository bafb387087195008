"""Tenancy and roles for every route the app serves, generated from its route table.

The routes come from the real app (`oprun.server.build_app`), so a new endpoint cannot
skip the matrix: one missing from `NEEDS` (or from docs/api.md's endpoint table, or
documented with another role) fails by name. What each role may do comes from the role
definitions (`oprun.domain.roles.ROLE_PERMISSIONS`) and the one right each route needs.

On one shared server per backend, with real resources seeded in project A:

- another project's admin (B) is answered 404 for every id of A in a path, never sees
  A's resources in a list, an event or a web page, cannot claim, renew, report on or
  close A's work through a worker of its own; and A is the same afterwards;
- each role gets exactly what its permissions say: 2xx when allowed, else 403
  `ACCESS_DENIED` naming the right it needs;
- no token is 401 `UNAUTHENTICATED` in the error shape (a web page sends to sign-in).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from oprun.domain.roles import ROLE_PERMISSIONS, Permission, Role
from oprun.server import build_app
from oprun.service import Services, Settings
from oprun.service.auth import bootstrap
from oprun.store import open_store
from oprun.testing import Server

Need = Permission | Literal["public", "server admin"]
"""The one right a route needs: a permission in the caller's project, none at all, or
an admin token of the server's first project (the server's own, not a tenant's)."""

NEEDS: dict[str, Need] = {
    # operations and session actions
    "invokeAction": Permission.INVOKE,
    "invokeActionsBulk": Permission.INVOKE,
    "listOperations": Permission.READ,
    "getOperation": Permission.READ,
    "waitOperation": Permission.READ,
    "cancelOperation": Permission.INVOKE,
    "retryOperation": Permission.INVOKE,
    "deleteOperation": Permission.INVOKE,
    "getLogs": Permission.READ,
    "listTasks": Permission.READ,
    "listSessionActions": Permission.READ,
    "listSessionActionsByFilter": Permission.READ,
    "getSessionAction": Permission.READ,
    "streamEvents": Permission.READ,
    # actions and queues
    "saveAction": Permission.DEFINE,
    "listActions": Permission.READ,
    "getAction": Permission.READ,
    "listVersions": Permission.READ,
    "listQueues": Permission.READ,
    "configureQueue": Permission.MANAGE,
    # workers
    "registerWorker": Permission.WORK,
    "listWorkers": Permission.READ,
    "getWorker": Permission.READ,
    "claimWork": Permission.WORK,
    "heartbeat": Permission.WORK,
    "report": Permission.WORK,
    # tokens, projects, retention, audit
    "createToken": Permission.MANAGE,
    "listTokens": Permission.MANAGE,
    "revokeToken": Permission.MANAGE,
    "rotateToken": Permission.MANAGE,
    "currentProject": Permission.READ,
    "getRetention": Permission.READ,
    "setRetention": Permission.MANAGE,
    "listAudit": Permission.MANAGE,
    "createProject": "server admin",
    # the server's own
    "metrics": "server admin",
    "health": "public",
    "ready": "public",
}
"""The right each API route needs, by operation id."""

WEB: dict[tuple[str, str], Need] = {
    ("GET", "/"): "public",  # a redirect to /jobs
    ("GET", "/docs"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/sign-in"): "public",
    ("POST", "/sign-in"): "public",
    ("POST", "/sign-out"): "public",
    ("GET", "/jobs"): Permission.READ,
    ("GET", "/jobs/rows/{operation_id}"): Permission.READ,
    ("GET", "/operations/{operation_id}"): Permission.READ,
    ("GET", "/operations/{operation_id}/live"): Permission.READ,
    ("GET", "/operations/{operation_id}/logs.txt"): Permission.READ,
    ("GET", "/actions"): Permission.READ,
    ("GET", "/actions/{name}"): Permission.READ,
    ("GET", "/workers"): Permission.READ,
    ("GET", "/queues"): Permission.READ,
    ("GET", "/audit"): Permission.MANAGE,
}
"""The right each web route (outside the OpenAPI document) needs, by method and path."""

DOCS_ROLE: dict[str, Need] = {
    "none": "public",
    "viewer": Permission.READ,
    "operator": Permission.INVOKE,
    "worker": Permission.WORK,
    "admin": Permission.MANAGE,
    "admin, deployer, worker (see Roles)": Permission.DEFINE,
}
"""How docs/api.md's role column reads: the lowest role named, as a right."""

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


# -- the route table ---------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """One method of one route of the app."""

    method: str
    path: str
    operation_id: str | None

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}" + (
            f" ({self.operation_id})" if self.operation_id else ""
        )


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Endpoint]:
    """Every method of every route of the real app (API and web), HEAD aside."""
    url = f"sqlite:///{tmp_path_factory.mktemp('routes') / 'oprun.db'}"
    store = open_store(url)
    bootstrap(store, "oprun_matrix_routes")
    services = Services.build(store, Settings(database_url=url))
    try:
        app = build_app(services, run_reaper=False)
        found: list[Endpoint] = []
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    operation_id = route.operation_id if isinstance(route, APIRoute) else None
                    found.append(Endpoint(method, route.path, operation_id))
        return found
    finally:
        services.close()


def _api(endpoints: list[Endpoint]) -> list[Endpoint]:
    return [e for e in endpoints if e.operation_id is not None]


def _web(endpoints: list[Endpoint]) -> list[Endpoint]:
    return [e for e in endpoints if e.operation_id is None]


def need_of(endpoint: Endpoint) -> Need:
    if endpoint.operation_id is not None:
        return NEEDS[endpoint.operation_id]
    return WEB[(endpoint.method, endpoint.path)]


def _documented() -> dict[tuple[str, str], str]:
    """docs/api.md's endpoint table: (method, path with `{}` for each parameter) -> role."""
    rows: dict[tuple[str, str], str] = {}
    for line in API_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for method, path in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) ([^` ]+)", cells[0]):
            rows[(method, _shape(path.split("?")[0]))] = cells[1]
    return rows


def _shape(path: str) -> str:
    return re.sub(r"{\w+}", "{}", path)


def _docs_need(role: str) -> Need | None:
    if role.startswith("admin of the server's first project"):
        return "server admin"
    return DOCS_ROLE.get(role)


def test_every_route_is_in_the_matrix_and_documented_with_its_role(
    endpoints: list[Endpoint],
) -> None:
    missing = [e.name for e in _api(endpoints) if e.operation_id not in NEEDS]
    missing += [e.name for e in _web(endpoints) if (e.method, e.path) not in WEB]
    missing = [m for m in missing if not m.startswith(("GET /static", "GET /docs/assets"))]
    assert missing == [], (
        f"routes the access matrix does not cover (add them to NEEDS/WEB): {missing}"
    )
    documented = _documented()
    wrong = []
    for endpoint in _api(endpoints):
        role = documented.get((endpoint.method, _shape(endpoint.path)))
        if role is None:
            wrong.append(f"{endpoint.name}: not in docs/api.md's endpoint table")
        elif _docs_need(role) != need_of(endpoint):
            wrong.append(
                f"{endpoint.name}: docs/api.md says {role!r}, it needs {need_of(endpoint)}"
            )
    assert wrong == [], "\n".join(wrong)
    assert len(_api(endpoints)) >= 38 and len(_web(endpoints)) >= 15


# -- a world: project A with one of everything, project B next to it ---------------------
DEFINITION = {"name": "", "entrypoint": "tests.integration.actions:echo"}
IDLE_QUEUE = "matrix-idle"


@dataclass
class World:
    """Project A's resources (ids and names), tokens of each role in A, and B's admin."""

    url: str
    server_admin: str
    admin: httpx.Client
    roles: dict[Role, str]
    other: httpx.Client
    other_worker: str
    other_project: str
    action: str
    queue: str
    running_op: str
    queued_op: str
    task: str
    session: str
    session_action: str
    lease_epoch: int
    worker: str
    idle_worker: str
    token: str
    ids: dict[str, str] = field(default_factory=dict)

    def path_value(self, endpoint: Endpoint, param: str) -> str:
        """A's resource for a path parameter of `endpoint`."""
        if param == "name":
            return self.queue if endpoint.path.startswith("/v1/queues") else self.action
        if param == "worker_id" and endpoint.operation_id in ("claimWork", "heartbeat", "report"):
            return self.idle_worker  # it serves a queue nothing waits in
        return {
            "operation_id": self.running_op,
            "session_action_id": self.session_action,
            "worker_id": self.worker,
            "token_id": self.token,
        }[param]

    def path(self, endpoint: Endpoint) -> str:
        return endpoint.path.format(**{p: self.path_value(endpoint, p) for p in endpoint.params})


def _client(url: str, secret: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def world(shared_server: Server) -> Iterator[World]:
    """Project A seeded through the API (a worker holding a running task), and project B."""
    tag = uuid.uuid4().hex[:8]
    with _client(shared_server.url, shared_server.token) as root:
        made = _ok(root.post("/v1/projects", json={"name": f"matrix-a-{tag}"}), 201)
        other = _ok(root.post("/v1/projects", json={"name": f"matrix-b-{tag}"}), 201)
    admin = _client(shared_server.url, made["token"])
    roles = {
        role: _ok(admin.post("/v1/tokens", json={"name": f"{role}-{tag}", "role": role}), 201)[
            "secret"
        ]
        for role in Role
    }
    spare = _ok(admin.post("/v1/tokens", json={"name": "spare", "role": "viewer"}), 201)["token"]
    action = f"matrix_{tag}"
    _ok(admin.post("/v1/actions", json={**DEFINITION, "name": action}), 201)
    _ok(admin.put(f"/v1/queues/{IDLE_QUEUE}", json={"priority": 1, "max_concurrency": 3}))
    with _client(shared_server.url, roles[Role.WORKER]) as worker_api:
        worker = _ok(worker_api.post("/v1/workers", json={"name": "a", "hostname": "a"}), 201)
        idle = _ok(
            worker_api.post(
                "/v1/workers", json={"name": "idle", "hostname": "a", "queues": [IDLE_QUEUE]}
            ),
            201,
        )
        running = _ok(admin.post("/v1/operations", json={"action": action}), 201)
        claimed = _ok(worker_api.post(f"/v1/workers/{worker['id']}:claim", json={"max": 1}))
        (assignment,) = claimed["assignments"]
        assert assignment["operation_id"] == running["id"]
        start = {
            "session_action_id": assignment["session_action_id"],
            "lease_epoch": assignment["lease_epoch"],
        }
        reports = [{**start, "kind": "running"}, {**start, "kind": "log", "lines": ["a secret"]}]
        batch = _ok(
            worker_api.post(f"/v1/workers/{worker['id']}:report", json={"reports": reports})
        )
        assert all(o["accepted"] for o in batch["outcomes"]), batch
    queued = _ok(admin.post("/v1/operations", json={"action": action}), 201)
    stop = threading.Event()
    beats = threading.Thread(
        target=_keep_alive,
        args=(shared_server.url, roles[Role.WORKER], worker["id"], idle["id"], start, stop),
        daemon=True,
    )
    beats.start()
    other_admin = _client(shared_server.url, other["token"])
    other_worker = _ok(other_admin.post("/v1/workers", json={"name": "b", "hostname": "b"}), 201)[
        "id"
    ]
    found = World(
        url=shared_server.url,
        server_admin=shared_server.token,
        admin=admin,
        roles=roles,
        other=other_admin,
        other_worker=other_worker,
        other_project=other["project"]["id"],
        action=action,
        queue=IDLE_QUEUE,
        running_op=running["id"],
        queued_op=queued["id"],
        task=assignment["task_id"],
        session=assignment["session_id"],
        session_action=assignment["session_action_id"],
        lease_epoch=assignment["lease_epoch"],
        worker=worker["id"],
        idle_worker=idle["id"],
        token=spare["id"],
    )
    try:
        yield found
    finally:
        stop.set()
        beats.join(timeout=10)
        admin.close()
        other_admin.close()


def _keep_alive(
    url: str, secret: str, worker: str, idle: str, held: dict[str, Any], stop: threading.Event
) -> None:
    """A's workers heartbeat (the running task's lease too) until the module ends.

    Without them a lapsed lease or a silent worker would change A while B probes it.
    """
    with _client(url, secret) as api:
        while not stop.wait(0.3):
            for worker_id, holding in ((worker, [held]), (idle, [])):
                with contextlib.suppress(httpx.HTTPError):  # the next beat tries again
                    api.post(f"/v1/workers/{worker_id}:heartbeat", json={"held": holding})


# -- requests for each route ---------------------------------------------------------------
def _body(world: World, endpoint: Endpoint) -> dict[str, Any]:
    """The query and body a call of `endpoint` sends: valid, so that only rights decide."""
    w = world
    return {
        "invokeAction": {"json": {"action": w.action}},
        "invokeActionsBulk": {"json": {"invocations": [{"action": w.action}]}},
        "waitOperation": {"params": {"timeout": 0}},
        "listSessionActionsByFilter": {"params": {"operation_id": w.running_op}},
        "saveAction": {"json": {**DEFINITION, "name": w.action}},
        "configureQueue": {"json": {"priority": 1, "max_concurrency": 3}},
        "registerWorker": {"json": {"name": "m", "hostname": "m", "queues": [IDLE_QUEUE]}},
        "claimWork": {"json": {"max": 1, "wait": 0}},
        "heartbeat": {"json": {"held": []}, "params": {"wait": 0}},
        "report": {"json": {}},
        "createToken": {"json": {"name": "m", "role": "viewer"}},
        "setRetention": {"json": {"days": None, "max_operations": None}},
        "createProject": {"json": {"name": "m"}},
        "streamEvents": {"params": {"after": 0}},
    }.get(endpoint.operation_id or "", {})


def _fresh_path(world: World, endpoint: Endpoint) -> str:
    """The path of a call that uses up its resource: a new one of A for each call."""
    admin = world.admin
    if endpoint.operation_id in ("cancelOperation", "deleteOperation"):
        op = _ok(admin.post("/v1/operations", json={"action": world.action}), 201)["id"]
        if endpoint.operation_id == "deleteOperation":
            _ok(admin.post(f"/v1/operations/{op}:cancel"))  # a queued one ends at once
        return endpoint.path.format(operation_id=op)
    if endpoint.operation_id in ("revokeToken", "rotateToken"):
        made = _ok(admin.post("/v1/tokens", json={"name": "fresh", "role": "viewer"}), 201)
        return endpoint.path.format(token_id=made["token"]["id"])
    return world.path(endpoint)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; an event stream is closed as soon as its status is known."""
    if path == "/v1/events":
        with client.stream(method, path, **kwargs) as response:
            if response.status_code != 200:
                response.read()
            return response
    return client.request(method, path, **kwargs)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
    )
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return body["error"]


def _denied_needs(role: Role, need: Need) -> str:
    """What a refusal of `role` names in `details.needs`."""
    if isinstance(need, Permission):
        return need.value
    return Permission.MANAGE.value if not role.allows(Permission.MANAGE) else "server admin"


def _allows(role: Role, need: Need) -> bool:
    if need == "public":
        return True
    if need == "server admin":
        return False  # A is not the server's first project
    return need in ROLE_PERMISSIONS[role]


# -- (b) roles ------------------------------------------------------------------------------
def test_each_role_gets_exactly_what_its_permissions_say(
    world: World, endpoints: list[Endpoint]
) -> None:
    wrong: list[str] = []
    for role in Role:
        with _client(world.url, world.roles[role]) as caller:
            for endpoint in _api(endpoints):
                need = need_of(endpoint)
                if need == "public":
                    continue
                allowed = _allows(role, need)
                path = _fresh_path(world, endpoint) if allowed else world.path(endpoint)
                response = _call(caller, endpoint.method, path, **_body(world, endpoint))
                where = f"{role.value}: {endpoint.name} answered {response.status_code}"
                if allowed and not 200 <= response.status_code < 300:
                    wrong.append(f"{where}, allowed ({need}): {response.text[:200]}")
                elif not allowed:
                    try:
                        error = _error(response, 403, "ACCESS_DENIED")
                        needs = error["details"].get("needs")
                        assert needs == _denied_needs(role, need), f"needs {needs!r}"
                    except AssertionError as exc:
                        wrong.append(f"{where}, denied ({need}): {exc}")
    assert wrong == [], "\n".join(wrong)
    # The server's own routes are the first project's admin's.
    with _client(world.url, world.server_admin) as root:
        assert root.get("/metrics").status_code == 200
        assert root.post("/v1/projects", json={"name": "matrix-root"}).status_code == 201


def test_each_role_gets_exactly_the_web_pages_its_permissions_say(
    world: World, endpoints: list[Endpoint]
) -> None:
    wrong = []
    for role in Role:
        with httpx.Client(base_url=world.url, cookies={"oprun_session": world.roles[role]}) as web:
            for endpoint in _web(endpoints):
                need = need_of(endpoint)
                if need == "public" or endpoint.method != "GET":
                    continue
                status = 200 if _allows(role, need) else 403
                response = web.get(world.path(endpoint))
                if response.status_code != status:
                    wrong.append(
                        f"{role.value}: {endpoint.name} {response.status_code}, not {status}"
                    )
    assert wrong == [], "\n".join(wrong)


# -- (c) no token ---------------------------------------------------------------------------
def test_no_token_is_401_in_the_error_shape(world: World, endpoints: list[Endpoint]) -> None:
    with _client(world.url, None) as anonymous:
        for endpoint in _api(endpoints):
            response = _call(
                anonymous, endpoint.method, world.path(endpoint), **_body(world, endpoint)
            )
            if need_of(endpoint) == "public":
                assert response.status_code == 200, endpoint.name
            else:
                _error(response, 401, "UNAUTHENTICATED")
        for endpoint in _web(endpoints):
            if need_of(endpoint) == "public":
                continue
            response = anonymous.get(world.path(endpoint))
            if "/live" in endpoint.path or "/rows/" in endpoint.path:
                assert response.status_code == 401, endpoint.name  # a page's script asked
            else:
                assert response.status_code == 303, endpoint.name
                assert response.headers["location"].startswith("/sign-in"), endpoint.name


# -- (a) another project ---------------------------------------------------------------------
def _snapshot(world: World) -> dict[str, Any]:
    """What B must not change in A, read by A's admin (times that move by themselves aside)."""
    a = world.admin
    ops = [world.running_op, world.queued_op]
    found = {
        "operations": [_ok(a.get(f"/v1/operations/{op}")) for op in ops],
        "tasks": [_ok(a.get(f"/v1/operations/{op}/tasks")) for op in ops],
        "attempts": _ok(a.get(f"/v1/operations/{world.running_op}/session-actions")),
        "logs": _ok(a.get(f"/v1/operations/{world.running_op}/logs")),
        "tokens": _ok(a.get("/v1/tokens", params={"limit": 500})),
        # Workers the roles test registered fall silent and change by themselves: A's own two.
        "workers": [_ok(a.get(f"/v1/workers/{w}")) for w in (world.worker, world.idle_worker)],
        "queues": _ok(a.get("/v1/queues", params={"limit": 500})),
        "actions": _ok(a.get("/v1/actions")),
        "versions": _ok(a.get(f"/v1/actions/{world.action}/versions")),
        "retention": _ok(a.get("/v1/projects/current/retention")),
        "project": _ok(a.get("/v1/projects/current")),
    }
    moving = {"last_used_at", "last_heartbeat_at", "throughput", "at"}

    def still(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: still(v) for k, v in value.items() if k not in moving}
        if isinstance(value, list):
            return [still(v) for v in value]
        return value

    return still(found)


def _leaks(world: World, response: httpx.Response) -> list[str]:
    """A's ids and names found in an answer (but those its request sent: 'no operation op_1')."""
    sent = str(response.request.url) + response.request.content.decode()
    text = response.text
    mine = [
        world.action,
        world.running_op,
        world.queued_op,
        world.task,
        world.session,
        world.session_action,
        world.worker,
        world.idle_worker,
        world.token,
        "a secret",
    ]
    return [value for value in mine if value in text and value not in sent]


def test_another_projects_admin_never_sees_or_changes_this_ones_resources(
    world: World, endpoints: list[Endpoint]
) -> None:
    before = _snapshot(world)
    other, wrong = world.other, []
    for endpoint in _api(endpoints):
        need = need_of(endpoint)
        if need in ("public", "server admin"):
            continue  # nothing of a project's; refused to B's admin (roles test)
        kwargs = _body(world, endpoint)
        if endpoint.operation_id == "saveAction":
            kwargs = {"json": {**DEFINITION, "name": f"b_{uuid.uuid4().hex[:8]}"}}
        response = _call(other, endpoint.method, world.path(endpoint), **kwargs)
        where = f"{endpoint.name} answered B {response.status_code}"
        if endpoint.params and endpoint.operation_id != "configureQueue":
            if response.status_code != 404:
                wrong.append(f"{where}, not 404: {response.text[:200]}")
        elif endpoint.operation_id in ("invokeAction", "invokeActionsBulk"):
            if response.status_code != 404:  # A's action is no action of B's
                wrong.append(f"{where}, not 404: {response.text[:200]}")
        elif not 200 <= response.status_code < 300:
            wrong.append(f"{where}: {response.text[:200]}")
        if endpoint.path != "/v1/events" and _leaks(world, response):
            wrong.append(f"{where}, showing A's {_leaks(world, response)}")
    wrong += _probe_with_a_worker_of_b(world)
    wrong += _probe_events_of_b(world)
    wrong += _probe_web_pages_of_b(world, endpoints)
    assert wrong == [], "\n".join(wrong)
    assert _snapshot(world) == before
    # A's own work goes on: its session still takes session actions after B "ended" it.
    with _client(world.url, world.roles[Role.WORKER]) as worker:
        sa = f"sa_{uuid.uuid4().hex}"
        session = {
            "session_id": world.session,
            "session_action_id": sa,
            "definition": {"envEnter": {"environmentId": "matrix"}},
            "status": "RUNNING",
        }
        done = _ok(worker.post(f"/v1/workers/{world.worker}:report", json={"sessions": [session]}))
        assert all(o["accepted"] for o in done["session_outcomes"]), done


def _probe_with_a_worker_of_b(world: World) -> list[str]:
    """B's own worker, given A's ids in bodies and filters: nothing of A's moves."""
    other, wrong = world.other, []
    base = f"/v1/workers/{world.other_worker}"
    held = {"session_action_id": world.session_action, "lease_epoch": world.lease_epoch}
    for claim in (
        {"max": 5},
        {"max": 5, "operation_id": world.queued_op},
        {"max": 5, "operation_id": world.running_op, "session_id": world.session},
    ):
        got = _ok(other.post(f"{base}:claim", json=claim))["assignments"]
        if got:
            wrong.append(f"B's worker claimed {claim}: {got}")
    beat = _ok(other.post(f"{base}:heartbeat", json={"held": [held]}))
    if world.session_action in beat["cancel"]:
        wrong.append(f"B's heartbeat holding A's work was told about it: {beat}")
    outcome = _ok(
        other.post(
            f"{base}:report",
            json={
                "reports": [
                    {**held, "kind": "log", "lines": ["from B"]},
                    {**held, "kind": "succeeded", "result": "B"},
                ],
                "sessions": [
                    {
                        "session_id": world.session,
                        "session_action_id": f"sa_{uuid.uuid4().hex}",
                        "definition": {"envEnter": {"environmentId": "b"}},
                        "status": "RUNNING",
                    }
                ],
                "ended_sessions": [world.session],
            },
        )
    )
    accepted = [o for o in outcome["outcomes"] + outcome["session_outcomes"] if o["accepted"]]
    if accepted:
        wrong.append(f"B's worker reported on A's work: {accepted}")
    for query in ({"session_id": world.session}, {"task_id": world.task}):
        page = _ok(other.get("/v1/session-actions", params=query))
        if page["items"]:
            wrong.append(f"B listed A's session actions by {query}: {page['items']}")
    return wrong


def _probe_events_of_b(world: World) -> list[str]:
    """B's event stream from its beginning holds none of A's events."""
    seen: list[str] = []
    timeout = httpx.Timeout(30, read=1.0)
    with world.other.stream("GET", "/v1/events", params={"after": 0}, timeout=timeout) as stream:
        try:
            for line in stream.iter_lines():
                seen.append(line)
        except httpx.ReadTimeout:
            pass  # no more events: the stream waits for the next
    events = [json.loads(line[6:]) for line in seen if line.startswith("data: ")]
    if not events:
        return ["B's event stream showed none of B's own events"]
    shown = [e for e in events if e["project_id"] != world.other_project or world.action in str(e)]
    shown += [
        e for e in events if any(v in json.dumps(e) for v in (world.running_op, world.worker))
    ]
    return [f"B's event stream showed A's: {e}" for e in shown]


def _probe_web_pages_of_b(world: World, endpoints: list[Endpoint]) -> list[str]:
    """B's web session: A's ids are not-found pages, B's lists show nothing of A."""
    wrong = []
    cookies = {"oprun_session": world.other.headers["authorization"].split()[1]}
    with httpx.Client(base_url=world.url, cookies=cookies) as web:
        for endpoint in _web(endpoints):
            if need_of(endpoint) == "public" or endpoint.method != "GET":
                continue
            response = web.get(world.path(endpoint))
            status = 404 if endpoint.params else 200  # B's cookie is an admin's
            if response.status_code != status or _leaks(world, response):
                wrong.append(
                    f"web {endpoint.name} answered B {response.status_code} "
                    f"(wanted {status}), showing A's {_leaks(world, response)}"
                )
    return wrong
