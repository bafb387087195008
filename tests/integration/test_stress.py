"""Stress proofs of the delivery semantics (issue 3), on real processes and real signals.

Each test runs a real `oprun server` (lease 2 s, reaper every 0.25 s: see conftest.py)
over a fresh SQLite or PostgreSQL database, real worker agents serving
tests.integration.stress_actions, and kills, stops, cancels and drains them for real.
What the server says is read over the HTTP API and, where the API shows no history
(tasks), straight from the database; marker files written by the action itself count
how often each task ran and ran to its end, whatever the server says.

Each test prints its measured figures on the terminal (`figure`), even without `-s`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from oprun.testing import Server, Worker
from tests.integration._logs import tails

APP = "tests.integration.stress_actions:app"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}
SA_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "INTERRUPTED", "RECLAIMED", "NEVER_ATTEMPTED"}

KILLED_TASKS = 50
"""Proof 1: tasks running on the worker that gets SIGKILL."""
SPAWN_BATCH = 10
"""Proof 1: tasks invoked at once while they are brought up (each starts a python child)."""
RACES = 1000
"""Proof 3: cancel-versus-complete races."""
RACERS = 8
"""Proof 3: threads invoking and canceling at once."""
DRAIN_RUNNING = 20
"""Proof 5: tasks running on the worker that gets SIGTERM (half finish during the drain)."""
DRAIN_BACKLOG = 6
"""Proof 5: tasks invoked while it drains, which it must leave to others."""


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture
def db(server) -> Iterator[Engine]:
    """Read access to the server's database (the API shows no task history)."""
    url = server.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def workers(server, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start worker agents serving the stress actions; stopped (and resumed first) after."""
    started: list[Worker] = []

    def start(concurrency: int, grace: float = 1.0) -> Worker:
        worker = Worker(
            server,
            app=APP,
            concurrency=concurrency,
            grace=grace,
            log_path=tmp_path / f"worker{len(started)}.log",
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)  # a test that failed mid-SIGSTOP
        worker.stop(timeout=15)


# -- helpers ----------------------------------------------------------------------------
def _warned(folder: Path) -> str:
    """The errors and warnings the server and the workers logged (for a failed wait)."""
    return tails(
        sorted(folder.glob("*.log")),
        lambda line: " ERROR " in line or " WARNING " in line,
        20,
        "last errors and warnings",
    )


def _eventually(
    check: Callable[[], object], timeout: float, what: str, told: Callable[[], str] = str
) -> float:
    """Seconds until `check()` is true; fails after `timeout`, with what `told()` says."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}\n{told()}".rstrip())
        time.sleep(0.02)


def _within(check: Callable[[], object], timeout: float) -> float | None:
    """Seconds until `check()` is true, or None if it is not within `timeout`."""
    try:
        return _eventually(check, timeout, "")
    except AssertionError:
        return None


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (or going) meanwhile
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below `root` now, by pid, with its start time (to tell pid reuse)."""
    children: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children[stat[1]].append((int(entry), stat[2]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            found[pid] = started
            todo.append(pid)
    return found


def _alive(processes: dict[int, int]) -> list[int]:
    """Those of `processes` still running (a zombie or a reused pid does not count)."""
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == started:
            alive.append(pid)
    return alive


def _invoke(api: httpx.Client, action: str, parameters: list[dict[str, Any]]) -> list[str]:
    """Invoke `action` once per parameter set, in one bulk request; the operation ids."""
    response = api.post(
        "/v1/operations:bulk",
        json={"invocations": [{"action": action, "parameters": p} for p in parameters]},
    )
    response.raise_for_status()
    return [op["id"] for op in response.json()["operations"]]


def _worker_id(api: httpx.Client, worker: Worker) -> str:
    items = api.get("/v1/workers", params={"limit": 500}).json()["items"]
    (found,) = [w["id"] for w in items if w["capabilities"].get("pid") == worker.pid]
    return str(found)


def _worker_status(api: httpx.Client, worker_id: str) -> str:
    return str(api.get(f"/v1/workers/{worker_id}").json()["status"])


def _rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def _statuses(engine: Engine, table: str) -> Counter[str]:
    found = _rows(engine, f"SELECT status, COUNT(*) AS n FROM {table} GROUP BY status")
    return Counter({r["status"]: int(r["n"]) for r in found})


def _all_ended(engine: Engine, n: int) -> bool:
    counts = _statuses(engine, "operations")
    return sum(counts[s] for s in TERMINAL) == n


def _histories(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every status history in the database, by entity, in order."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(
        engine, "SELECT entity_id, status, detail, at FROM status_history ORDER BY seq"
    ):
        found[row["entity_id"]].append(row)
    return found


def _session_actions(engine: Engine) -> list[dict[str, Any]]:
    return _rows(
        engine,
        "SELECT id, operation_id, task_id, worker_id, status, lease_epoch, started_at,"
        " ended_at, worker_updated_at FROM session_actions ORDER BY id",
    )


def _ends_once(history: list[dict[str, Any]], terminal: set[str]) -> bool:
    """Exactly one terminal status in `history`, and it is the last entry."""
    ends = [i for i, h in enumerate(history) if h["status"] in terminal]
    return len(ends) == 1 and ends[0] == len(history) - 1


def _markers(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """`start` or `done` markers of the gate action, by session action id."""
    if not folder.exists():
        return {}
    found = {}
    for path in folder.glob(f"{kind}-*"):
        task_id, sa_id = path.name.removeprefix(f"{kind}-").split("-", 1)
        found[sa_id] = {"task_id": task_id, **json.loads(path.read_text())}
    return found


def _eventually_held(
    engine: Engine, folder: Path, worker_id: str, n: int, timeout: float
) -> set[str]:
    """Wait until `worker_id` runs `n` attempts (server: RUNNING; action: started); their ids."""

    def running() -> set[str]:
        sas = _rows(
            engine,
            "SELECT id FROM session_actions WHERE worker_id = :w AND status = 'RUNNING'",
            w=worker_id,
        )
        return {r["id"] for r in sas} & set(_markers(folder, "start"))

    def lapsed() -> int:
        sas = _session_actions(engine)
        return sum(sa["worker_id"] == worker_id and sa["status"] == "INTERRUPTED" for sa in sas)

    try:
        _eventually(lambda: len(running()) == n, timeout, f"{n} attempts run on {worker_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {lapsed()} of its attempts lost their lease") from None
    return running()


def _check_once_each(
    engine: Engine, folder: Path, finisher: str, *, ran_once: bool = True
) -> dict[str, list[dict]]:
    """Every operation succeeded once, by an attempt of `finisher`; the attempts by task.

    With `ran_once`, the action itself also ran to its end just once per task.
    """
    ops = {r["id"]: r for r in _rows(engine, "SELECT id, status, result FROM operations")}
    assert Counter(r["status"] for r in ops.values()) == {"SUCCEEDED": len(ops)}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sa in _session_actions(engine):
        by_task[sa["task_id"]].append(sa)
    done = _markers(folder, "done")
    done_per_task = Counter(m["task_id"] for m in done.values())
    histories = _histories(engine)
    for task_id, attempts in by_task.items():
        won = [sa for sa in attempts if sa["status"] == "SUCCEEDED"]
        assert len(won) == 1, f"task {task_id}: {len(won)} attempts succeeded"
        assert won[0]["worker_id"] == finisher, f"task {task_id} finished on the wrong worker"
        if ran_once:
            runs = done_per_task[task_id]
            assert runs == 1, f"task {task_id} ran to its end {runs}x"
        assert won[0]["id"] in done  # and that run was the attempt the server accepted
        assert _ends_once(histories[task_id], TERMINAL), histories[task_id]
        result = ops[won[0]["operation_id"]]["result"]
        if isinstance(result, str):
            result = json.loads(result)
        assert result["session_action_id"] == won[0]["id"]
    return by_task


# -- proof 1 ----------------------------------------------------------------------------
def test_sigkill_of_a_worker_holding_50_tasks_requeues_each_once_and_leaves_no_process(
    server: Server, api, db, workers, tmp_path, figure
):
    """Proof 1: kill -9 a worker running 50 tasks.

    All 50 are requeued within lease + reaper interval + 5 s and finished by a second
    worker; none is lost, none completes twice, and none of the killed worker's
    processes (a child and a grandchild per task) outlives it by 2 s.
    """
    marks, gate = tmp_path / "marks", tmp_path / "gate"
    first = workers(concurrency=KILLED_TASKS)
    first_id = _worker_id(api, first)
    params = {"marker_dir": str(marks), "gate": str(gate), "grandchild": True}
    ops: list[str] = []
    for _ in range(0, KILLED_TASKS, SPAWN_BATCH):  # 50 interpreters starting at once on 2
        ops += _invoke(api, "gate", [params] * SPAWN_BATCH)  # cores starve everything
        held = _eventually_held(db, marks, first_id, len(ops), 60)
    second = workers(concurrency=5)  # idle until the work comes back
    second_id = _worker_id(api, second)
    tree = _descendants(first.pid)
    assert len(tree) >= 2 * KILLED_TASKS  # a child and a grandchild per task

    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    gone = _eventually(lambda: not _alive(tree), 2, "the killed worker's processes are gone")
    gate.touch()  # attempts from now on may finish
    _eventually(
        lambda: _all_ended(db, len(ops)), 60, "every operation ended", lambda: _warned(tmp_path)
    )
    finished = time.time() - killed_at

    by_task = _check_once_each(db, marks, second_id)
    assert len(by_task) == KILLED_TASKS
    histories = _histories(db)
    requeued, churn = [], 0
    for task_id, attempts in by_task.items():
        attempts.sort(key=lambda sa: sa["lease_epoch"])
        (killed,) = [sa for sa in attempts if sa["id"] in held]
        after = attempts[attempts.index(killed) + 1 :]
        before = attempts[: attempts.index(killed)]
        assert killed["status"] == "INTERRUPTED"
        assert histories[killed["id"]][-1]["detail"] == "lease expired"
        assert [(sa["worker_id"], sa["status"]) for sa in after] == [(second_id, "SUCCEEDED")]
        # Attempts lost before the kill (a lease that lapsed while the machine was busy).
        assert all(sa["status"] in {"INTERRUPTED", "NEVER_ATTEMPTED"} for sa in before)
        churn += len(before)
        back = [
            h["at"] for h in histories[task_id] if h["status"] == "QUEUED" and h["at"] > killed_at
        ]
        assert len(back) == 1, histories[task_id]
        requeued.append(back[0] - killed_at)
    bound = server.lease_seconds + server.reap_interval + 5
    figure(
        f"SIGKILL of a worker running {KILLED_TASKS} tasks: its {len(tree)} processes gone "
        f"{gone:.2f} s after; all {KILLED_TASKS} requeued {min(requeued):.2f}-"
        f"{max(requeued):.2f} s after (bound {bound:g} s); worker 2 finished all "
        f"{finished:.2f} s after; 0 lost, 0 completed twice"
        + (f" ({churn} attempts lost to lapsed leases before the kill)" if churn else "")
    )
    assert max(requeued) <= bound


# -- proof 2 ----------------------------------------------------------------------------
def test_a_worker_stopped_past_its_lease_gets_no_report_accepted_and_exits_when_resumed(
    server: Server, api, db, workers, tmp_path, figure
):
    """Proof 2: SIGSTOP a worker until the server gives it up, then SIGCONT.

    Nothing it reports after its leases lapsed is accepted (its attempts end
    INTERRUPTED and stay so), every outcome comes from another worker, it is not handed
    work while it is silent, and once resumed it is told to stop: its processes are
    gone within grace + 2 s and it exits.
    """
    marks, early, late = tmp_path / "marks", tmp_path / "gate-early", tmp_path / "gate-late"
    grace = 1.0
    # Free slots, so a claim of the stopped worker is pending at the server while it is
    # stopped and its work comes back.
    first = workers(concurrency=8, grace=grace)
    first_id = _worker_id(api, first)
    ops = _invoke(
        api,
        "gate",
        [{"marker_dir": str(marks), "gate": str(g), "grandchild": True} for g in (early, late) * 2],
    )
    held = _eventually_held(db, marks, first_id, len(ops), 60)
    tree = _descendants(first.pid)
    assert len(tree) >= 2 * len(ops)

    stopped_at = time.time()
    os.kill(first.pid, signal.SIGSTOP)
    bound = server.lease_seconds + server.reap_interval + 5

    def interrupted() -> bool:
        sas = [sa for sa in _session_actions(db) if sa["id"] in held]
        return all(sa["status"] == "INTERRUPTED" for sa in sas)

    lapsed = _eventually(interrupted, bound, "the stopped worker's attempts are interrupted")
    # Another worker comes to take the work over (only now, so that nothing but the
    # stopped worker's own pending claim could take it back in between).
    second = workers(concurrency=4)
    second_id = _worker_id(api, second)
    # Half the work now finishes on worker 1's children while it is stopped: it has
    # outcomes to report when it comes back, which the server must refuse.
    early.touch()
    first_runs = {sa for sa, m in _markers(marks, "start").items() if m["ppid"] == first.pid}
    _eventually(
        lambda: len(first_runs & set(_markers(marks, "done"))) == len(ops) // 2,
        10,
        "worker 1's early tasks end while it is stopped",
    )
    # It comes back only once the server has given it up for lost.
    silence = server.worker_silence or 3 * server.lease_seconds  # the server's default
    given_up = time.time() - stopped_at
    given_up += _eventually(
        lambda: _worker_status(api, first_id) == "NOT_RESPONDING",
        silence + server.reap_interval + 5,
        "worker 1 is NOT_RESPONDING",
    )
    _eventually(
        lambda: _statuses(db, "operations")["SUCCEEDED"] == len(ops) // 2,
        20,
        "worker 2 finishes the early tasks",
    )
    resumed_at = time.time()
    os.kill(first.pid, signal.SIGCONT)
    children_gone = _within(lambda: not _alive(tree), grace + 2)
    exited = _within(lambda: first.process.poll() is not None, 10)
    late.touch()
    _eventually(
        lambda: _all_ended(db, len(ops)), 30, "every operation ended", lambda: _warned(tmp_path)
    )

    histories = _histories(db)
    mine = [sa for sa in _session_actions(db) if sa["worker_id"] == first_id]
    regiven = [
        sa["id"]
        for sa in mine
        if any(h["status"] == "ASSIGNED" and h["at"] > stopped_at for h in histories[sa["id"]])
    ]
    figure(
        f"SIGSTOP past the lease: attempts interrupted {lapsed:.2f} s after the stop "
        f"(bound {bound:g} s), NOT_RESPONDING after {given_up:.2f} s (silence {silence:g} s); "
        f"{len(regiven)} handed back to the stopped worker; after SIGCONT "
        f"its {len(tree)} processes "
        + (f"gone in {children_gone:.2f} s" if children_gone is not None else "NOT all gone")
        + f" (bound {grace + 2:g} s), the worker "
        + (f"exited in {exited:.2f} s" if exited is not None else "did NOT exit within 10 s")
        + "; 0 of its reports accepted after the lapse"
    )

    # The server accepted nothing from worker 1 once its leases lapsed...
    logs = _rows(db, "SELECT session_action_id, at FROM logs")
    for sa in mine:
        assert sa["status"] == "INTERRUPTED", sa
        assert _ends_once(histories[sa["id"]], SA_TERMINAL), histories[sa["id"]]
        assert all(h["at"] < resumed_at for h in histories[sa["id"]]), histories[sa["id"]]
        assert sa["worker_updated_at"] is None or sa["worker_updated_at"] <= sa["ended_at"]
        assert not [r for r in logs if r["session_action_id"] == sa["id"] and r["at"] > stopped_at]
    # ... and every task's one outcome comes from worker 2 (the early tasks also ran to
    # their end on worker 1, whose outcomes were refused: at-least-once execution).
    _check_once_each(db, marks, second_id, ran_once=False)
    problems = []
    if regiven:
        problems.append(
            f"{len(regiven)} tasks requeued from the stopped worker's lapsed leases were "
            "assigned to it again (by its claim still pending at the server)"
        )
    if children_gone is None:
        problems.append(f"processes of the resumed worker still there: {_alive(tree)}")
    if exited is None:
        problems.append("the resumed worker did not exit (expected: heartbeat answers stop)")
    assert not problems, problems


# -- proof 3 ----------------------------------------------------------------------------
class _Aim:
    """The delay from invoke to cancel, steered to the moment operations complete.

    A cancel answered 409 came after the end (the delay shrinks), any other came
    before it (the delay grows): the delay settles where half the cancels come
    before the completion and half after, and each is spread +-50 % around it.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._lock = threading.Lock()

    def sample(self, rng: random.Random) -> float:
        return self.delay * rng.uniform(0.5, 1.5)

    def learn(self, late: bool) -> None:
        with self._lock:
            self.delay = max(0.001, min(2.0, self.delay * (0.95 if late else 1.05)))


def test_1000_cancel_versus_complete_races_end_each_operation_once(
    server: Server, api, db, workers, figure
):
    """Proof 3: 1,000 cancels aimed at the moment operations complete, over HTTP.

    Every operation, its task and its session action end with exactly one terminal
    status, never followed by another, and they agree with one another.
    """
    workers(concurrency=4, grace=1.0)
    headers = {"Authorization": f"Bearer {server.token}"}
    started = time.monotonic()
    warmup = api.post("/v1/operations", json={"action": "quick"}).json()
    api.get(f"/v1/operations/{warmup['id']}:wait", params={"timeout": 10})
    aim = _Aim(time.monotonic() - started)

    answers: dict[str, int] = {}  # operation id -> HTTP status of its cancel
    failures: list[BaseException] = []
    lock = threading.Lock()

    def race(count: int, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
                for _ in range(count):
                    invoked = http.post("/v1/operations", json={"action": "quick"})
                    invoked.raise_for_status()
                    op_id = invoked.json()["id"]
                    time.sleep(aim.sample(rng))
                    answer = http.post(f"/v1/operations/{op_id}:cancel")
                    if answer.status_code != 409:  # 409: it had ended, the cancel changes nothing
                        answer.raise_for_status()  # accepted; the answer is the state after it
                        status = answer.json()["status"]
                        assert status in ("CANCELED", "CANCELING", "SUCCEEDED"), answer.text
                    aim.learn(answer.status_code == 409)
                    with lock:
                        answers[op_id] = answer.status_code
        except BaseException as exc:
            failures.append(exc)

    began = time.monotonic()
    threads = [
        threading.Thread(target=race, args=(RACES // RACERS, seed)) for seed in range(RACERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    raced = time.monotonic() - began
    assert len(answers) == RACES
    _eventually(lambda: _all_ended(db, RACES + 1), 60, "every operation ended")

    histories = _histories(db)
    ops = {
        r["id"]: r
        for r in _rows(db, "SELECT id, status, result FROM operations")
        if r["id"] in answers
    }
    tasks = _rows(db, "SELECT id, operation_id, status FROM tasks")
    assert len(ops) == RACES
    for op_id, op in ops.items():
        assert op["status"] in {"SUCCEEDED", "CANCELED"}, op
        assert _ends_once(histories[op_id], TERMINAL), (op_id, histories[op_id])
    task_of = {}
    for task in tasks:
        assert _ends_once(histories[task["id"]], TERMINAL), (task, histories[task["id"]])
        task_of[task["operation_id"]] = task
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sa in _session_actions(db):
        assert _ends_once(histories[sa["id"]], SA_TERMINAL), (sa, histories[sa["id"]])
        attempts[sa["operation_id"]].append(sa)
    outcomes: Counter[tuple[str, str]] = Counter()
    for op_id, op in ops.items():
        task, tried = task_of[op_id], attempts.get(op_id, [])
        assert task["status"] == op["status"], (op, task)
        assert len(tried) <= 1, tried  # `quick` has one attempt
        seen = [h["status"] for h in histories[op_id]]
        if answers[op_id] == 409:
            verdict = "late"  # the cancel came after the end and changed nothing
            assert op["status"] == "SUCCEEDED" and "CANCELING" not in seen, seen
        elif "SCHEDULED" not in seen:
            verdict = "early"  # canceled while queued: it never ran
            assert op["status"] == "CANCELED" and not tried, (op, tried)
        else:
            verdict = "raced"  # canceled while a worker had it: either outcome, once
            assert "CANCELING" in seen, seen
        if op["status"] == "SUCCEEDED":
            (sa,) = tried
            assert sa["status"] == "SUCCEEDED", (op, sa)
            result = op["result"]
            assert (json.loads(result) if result.startswith('"') else result) == sa["id"]
        elif tried:
            (sa,) = tried
            assert sa["status"] in {"CANCELED", "NEVER_ATTEMPTED"}, (op, sa)
        outcomes[verdict, op["status"]] += 1
    # The API tells the same story as the database.
    listed: Counter[str] = Counter()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, "action": "quick"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/operations", params=params).json()
        for op in page["items"]:
            if op["id"] in ops:
                assert op["status"] == ops[op["id"]]["status"]
                listed[op["status"]] += 1
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert sum(listed.values()) == RACES
    figure(
        f"{RACES} cancel-vs-complete races in {raced:.1f} s ({RACERS} threads, cancel aimed "
        f"{aim.delay * 1000:.0f} ms +-50 % after invoke): SUCCEEDED {listed['SUCCEEDED']}, "
        f"CANCELED {listed['CANCELED']}; cancel found it queued {outcomes['early', 'CANCELED']}"
        f" (all CANCELED), under way {outcomes['raced', 'SUCCEEDED'] + outcomes['raced', 'CANCELED']}"
        f" (then SUCCEEDED {outcomes['raced', 'SUCCEEDED']}, CANCELED "
        f"{outcomes['raced', 'CANCELED']}), ended {outcomes['late', 'SUCCEEDED']} (409); "
        "every operation, task and session action ended exactly once"
    )


# -- proof 5 ----------------------------------------------------------------------------
def test_sigterm_drain_under_load_claims_nothing_more_and_hands_work_over_once(
    server: Server, api, db, workers, tmp_path, figure
):
    """Proof 5: SIGTERM a worker running 20 tasks while more work arrives.

    It is given nothing after the signal; what finishes within its grace period is
    reported, the rest is released and picked up by another worker within grace + 5 s;
    nothing is lost or runs to its end twice.

    (Proof 4, cancel of a task whose grandchild ignores SIGTERM, is
    test_flow.py::test_cancel_of_running_work_leaves_no_process_behind.)
    """
    marks, soon, later = tmp_path / "marks", tmp_path / "gate-soon", tmp_path / "gate-later"
    grace = 1.5
    half = DRAIN_RUNNING // 2
    # Spare slots: its claim is pending while it drains and work comes back or arrives.
    first = workers(concurrency=DRAIN_RUNNING + 4, grace=grace)
    first_id = _worker_id(api, first)
    soon_params = {"marker_dir": str(marks), "gate": str(soon), "grandchild": True}
    later_params = {"marker_dir": str(marks), "gate": str(later), "grandchild": True}
    ops = _invoke(api, "gate", [soon_params] * half + [later_params] * half)
    _eventually(lambda: _statuses(db, "tasks")["QUEUED"] == 0, 30, "worker 1 claims it all")
    # Worker 2 waits for work meanwhile: its claim competes with worker 1's.
    second = workers(concurrency=half + DRAIN_BACKLOG)
    second_id = _worker_id(api, second)
    held = _eventually_held(db, marks, first_id, DRAIN_RUNNING, 60)
    tree = _descendants(first.pid)

    signaled_at = time.time()
    first.process.send_signal(signal.SIGTERM)
    stopping = _eventually(
        lambda: _worker_status(api, first_id) == "STOPPING", 5, "worker 1 says STOPPING"
    )
    soon.touch()  # half its work ends within the grace period, freeing slots
    ops += _invoke(api, "gate", [later_params] * DRAIN_BACKLOG)  # work it must not take
    assert first.process.wait(grace + 15) == 0
    drained = time.time() - signaled_at
    gone = _eventually(lambda: not _alive(tree), 5, "worker 1's processes are gone")
    later.touch()
    _eventually(
        lambda: _all_ended(db, len(ops)), 60, "every operation ended", lambda: _warned(tmp_path)
    )

    sas = _session_actions(db)
    histories = _histories(db)
    mine = [sa for sa in sas if sa["worker_id"] == first_id]
    assigned_after = [
        sa["id"]
        for sa in mine
        if any(h["status"] == "ASSIGNED" and h["at"] > signaled_at for h in histories[sa["id"]])
    ]
    assert not assigned_after, f"worker 1 was given work after SIGTERM: {assigned_after}"
    ended = Counter(
        (sa["status"], histories[sa["id"]][-1]["detail"]) for sa in mine if sa["id"] in held
    )
    assert ended == {("SUCCEEDED", None): half, ("INTERRUPTED", "released by worker"): half}
    # (Any other attempt of worker 1 lost its lease before the signal, on a busy machine.)
    assert all(
        sa["status"] in {"INTERRUPTED", "NEVER_ATTEMPTED"} for sa in mine if sa["id"] not in held
    )
    released = {sa["task_id"] for sa in mine if sa["id"] in held and sa["status"] != "SUCCEEDED"}
    # Released work was picked up by worker 2 soon after, ran once, and nothing was lost.
    taken = [
        h["at"] - signaled_at
        for sa in sas
        if sa["worker_id"] == second_id and sa["task_id"] in released
        for h in histories[sa["id"]]
        if h["status"] == "ASSIGNED"
    ]
    assert len(taken) == half
    assert _statuses(db, "operations") == {"SUCCEEDED": len(ops)}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sa in sas:
        by_task[sa["task_id"]].append(sa)
    done = Counter(m["task_id"] for m in _markers(marks, "done").values())
    assert len(by_task) == len(ops)
    for task_id, attempts in by_task.items():
        assert [sa["status"] for sa in attempts].count("SUCCEEDED") == 1, attempts
        assert done[task_id] == 1, f"task {task_id} ran to its end {done[task_id]}x"
        assert _ends_once(histories[task_id], TERMINAL), histories[task_id]
    bound = grace + 5
    figure(
        f"SIGTERM drain of a worker running {DRAIN_RUNNING} tasks (grace {grace:g} s): "
        f"STOPPING on the server {stopping:.2f} s after the signal; exited 0 after "
        f"{drained:.2f} s, its {len(tree)} processes gone {gone:.2f} s later; "
        f"{half} finished in the grace period, {half} released and picked up by worker 2 "
        f"{min(taken):.2f}-{max(taken):.2f} s after the signal (bound {bound:g} s); "
        f"0 claims after the signal ({DRAIN_BACKLOG} invoked during the drain), "
        "0 lost, 0 run twice"
    )
    assert max(taken) <= bound
