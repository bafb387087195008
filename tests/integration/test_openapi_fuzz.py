"""The OpenAPI document is the truth: schemathesis over every operation on both backends.

Bounded (a few examples per operation, derandomized so a run is repeatable), with
positive and negative data: no answer is a 5xx and every status is one the document
lists for its operation. Each operation runs as a tenant of its own project on the
module's shared server. The event stream is left out (it never ends by design).

Random ids would only ever meet 404s, so about half the examples of an operation with
a path parameter name a real resource of the project instead (`Resources`): a running
operation held by a worker, a queued one, its task's session action, that worker, a
token, an action and a queue; the rest of the request stays as generated, valid or not.
A call that uses its resource up (cancel, delete, revoke, rotate) gets a new one, and
long polls are cut to 50 ms so the run stays about as long as it was.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.integration.conftest import Tenant

EXAMPLES = 8
"""Examples per operation and generation mode: the whole run stays within a minute or so."""
LEFT_OUT = frozenset({"streamEvents"})


LONG_POLLS = ("timeout", "wait")
"""Query and body fields that make a call wait: cut to `SHORT_WAIT` seconds on real ids."""
SHORT_WAIT = 0.05
USED_UP = {
    "cancelOperation": "fresh_operation",
    "deleteOperation": "finished_operation",
    "revokeToken": "fresh_token",
    "rotateToken": "fresh_token",
}
"""Operations that use their resource up, and what makes a new one for each call."""


@dataclass
class Resources:
    """Real resources of the fuzzed project, to put in path parameters."""

    api: httpx.Client
    action: str
    queue: str
    running: str
    worker: str
    session_action: str
    token: str
    used: int = 0
    """How many cases named a real resource."""

    def _created(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    def fresh_operation(self) -> str:
        return str(
            self._created(self.api.post("/v1/operations", json={"action": self.action}))["id"]
        )

    def finished_operation(self) -> str:
        op = self.fresh_operation()
        self._created(self.api.post(f"/v1/operations/{op}:cancel"))  # queued: ends at once
        return op

    def fresh_token(self) -> str:
        made = self.api.post("/v1/tokens", json={"name": "fuzzed", "role": "viewer"})
        return str(self._created(made)["token"]["id"])

    def value(self, operation_id: str, path: str, param: str) -> str:
        """A real resource for the path parameter `param` of an operation."""
        if operation_id in USED_UP:
            return str(getattr(self, USED_UP[operation_id])())
        if param == "name":
            return self.queue if path.startswith("/v1/queues") else self.action
        return {
            "operation_id": self.running,
            "session_action_id": self.session_action,
            "worker_id": self.worker,
            "token_id": self.token,
        }[param]

    def substitute(self, case: Any) -> Any:
        """`case` naming real resources in its path, its long polls cut short."""
        operation_id = case.operation.definition.raw["operationId"]
        for param in list(case.path_parameters or {}):
            case.path_parameters[param] = self.value(operation_id, case.operation.path, param)
        if operation_id == "waitOperation":  # its default is a 30 s wait
            case.query = {"timeout": SHORT_WAIT, **(case.query or {})}
        if operation_id == "getLogs" and (case.query or {}).get("follow") not in (None, False):
            case.query = {"wait": SHORT_WAIT, **case.query}  # follow's default is 20 s
        for container in (case.query, case.body):
            if isinstance(container, dict):
                for key in LONG_POLLS:
                    if _seconds(container.get(key)) > SHORT_WAIT:
                        container[key] = SHORT_WAIT
        self.used += 1
        return case


def _seconds(value: Any) -> float:
    """How long a generated wait asks for (0 for anything that is not a number)."""
    if isinstance(value, bool):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _seed(url: str, token: str) -> Resources:
    """One of everything in the tenant's project, through the API (a worker holds a task)."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    action = f"fuzzed_{uuid.uuid4().hex[:8]}"
    api.post("/v1/actions", json={"name": action, "entrypoint": "tests.integration.actions:echo"})
    api.put("/v1/queues/fuzzed", json={"priority": 0, "max_concurrency": None})
    worker = api.post("/v1/workers", json={"name": "fuzzed", "hostname": "h"}).json()["id"]
    running = api.post("/v1/operations", json={"action": action}).json()["id"]
    claimed = api.post(f"/v1/workers/{worker}:claim", json={"max": 1}).json()["assignments"]
    (assignment,) = claimed
    held = {
        "session_action_id": assignment["session_action_id"],
        "lease_epoch": assignment["lease_epoch"],
    }
    api.post(
        f"/v1/workers/{worker}:report",
        json={"reports": [{**held, "kind": "running"}, {**held, "kind": "log", "lines": ["x"]}]},
    )
    api.post("/v1/operations", json={"action": action})  # a queued one, for claims to take
    spare = api.post("/v1/tokens", json={"name": "spare", "role": "viewer"}).json()["token"]["id"]
    return Resources(
        api=api,
        action=action,
        queue="fuzzed",
        running=running,
        worker=worker,
        session_action=assignment["session_action_id"],
        token=spare,
    )


def _exercise(
    operation: Any, mode: GenerationMode, auth: dict[str, str], real: Resources
) -> str | None:
    strategy = operation.as_strategy(generation_mode=mode)
    if re.search(r"{\w+}", operation.path):
        strategy = st.one_of(strategy, strategy.map(real.substitute))

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers=auth, checks=[not_a_server_error, status_code_conformance], timeout=30
        )

    try:
        run()
    except Unsatisfiable:
        return None  # no negative data exists for an operation that takes nothing
    except Exception as exc:  # a failed check: report it with the operation, go on
        # A flaky failure wraps what the first call raised: a check's failure group is a
        # BaseException, so hypothesis hides it behind its cause; show the cause.
        inner = "".join(f"\n  {e.__cause__ or e!r}" for e in getattr(exc, "exceptions", ()))
        return f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}{inner}"[:3000]
    return None


def test_every_operation_answers_only_documented_statuses_and_never_a_server_error(
    tenant: Tenant, figure: Callable[[str], None]
) -> None:
    schema = schemathesis.openapi.from_url(f"{tenant.url}/openapi.json")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    real = _seed(tenant.url, tenant.token)
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in LEFT_OUT:
            continue
        tested += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _exercise(operation, mode, auth, real)
            if failure is not None:
                failures.append(failure)
    real.api.close()
    figure(f"{tested} operations fuzzed, {real.used} cases on real resources")
    assert tested >= 32
    assert real.used >= 100, f"only {real.used} cases named a real resource"
    assert failures == [], "\n\n".join(failures)
