"""Job plans: every value of a parameter space lands in exactly one task, steps in order."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openjd.model import IntRangeExpr

from oprun.openjd import plan_job

PLAN_SETTINGS = settings(max_examples=60, deadline=None)


def template(steps: list[dict[str, Any]], *, chunking: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"specificationVersion": "jobtemplate-2023-09", "name": "P", "steps": steps}
    if chunking:
        t["extensions"] = ["TASK_CHUNKING"]
    return t


def step(name: str, params: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "name": name,
        "script": {"actions": {"onRun": {"command": "true"}}},
        **extra,
    }
    if params:
        s["parameterSpace"] = {"taskParameterDefinitions": params}
    return s


@st.composite
def int_values(draw: st.DrawFn) -> tuple[str | list[int], list[int]]:
    """A range expression or a list of ints, with the values it stands for."""
    if draw(st.booleans()):
        start = draw(st.integers(0, 500))
        count = draw(st.integers(1, 60))
        stride = draw(st.integers(1, 5))
        end = start + (count - 1) * stride
        expr = f"{start}-{end}" + (f":{stride}" if stride > 1 else "")
        return expr, list(range(start, end + 1, stride))
    values = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=40, unique=True))
    return values, values


@given(int_values(), st.one_of(st.none(), st.integers(1, 25)), st.booleans())
@PLAN_SETTINGS
def test_int_range_tasks_cover_every_value_exactly_once(values, chunk, contiguous):
    spec, expected = values
    if chunk is None:
        param = {"name": "Frame", "type": "INT", "range": spec}
    else:
        param = {
            "name": "Frame",
            "type": "CHUNK[INT]",
            "range": spec,
            "chunks": {
                "defaultTaskCount": chunk,
                "rangeConstraint": "CONTIGUOUS" if contiguous else "NONCONTIGUOUS",
            },
        }
    (plan,) = plan_job(template([step("S", [param])], chunking=chunk is not None), {})
    seen: list[int] = []
    for task in plan.tasks:
        ((tag, value),) = task["Frame"].items()
        if chunk is None:
            assert tag == "int"
            seen.append(int(value))
        else:
            assert tag == "chunkInt"
            members = list(IntRangeExpr.from_str(value))
            assert 1 <= len(members) <= chunk
            seen.extend(members)
    assert Counter(seen) == Counter(expected)
    if chunk is None:
        assert len(plan.tasks) == len(expected)
    else:
        assert len(plan.tasks) >= -(-len(expected) // chunk)


@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=8, unique=True),
    st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
)
@PLAN_SETTINGS
def test_a_product_has_every_pair_once(ints, strings):
    params = [
        {"name": "A", "type": "INT", "range": ints},
        {"name": "B", "type": "STRING", "range": strings},
    ]
    (plan,) = plan_job(template([step("S", params)]), {})
    pairs = [(int(t["A"]["int"]), t["B"]["string"]) for t in plan.tasks]
    assert len(pairs) == len(ints) * len(strings)
    assert set(pairs) == {(a, b) for a in ints for b in strings}


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.permutations(range(n)))))
@PLAN_SETTINGS
def test_an_association_pairs_values_by_position(case):
    n, order = case
    params = [
        {"name": "A", "type": "INT", "range": list(range(n))},
        {"name": "B", "type": "FLOAT", "range": [float(i) + 0.5 for i in order]},
        {"name": "C", "type": "STRING", "range": [f"c{i}" for i in range(3)]},
    ]
    space_step = step("S", params)
    space_step["parameterSpace"]["combination"] = "(A, B) * C"
    (plan,) = plan_job(template([space_step]), {})
    assert len(plan.tasks) == n * 3
    triples = {(t["A"]["int"], t["B"]["float"], t["C"]["string"]) for t in plan.tasks}
    assert len(triples) == n * 3
    for a, b, _ in triples:
        assert float(b) == order[int(a)] + 0.5


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """Step names in template order and each step's dependencies (acyclic)."""
    count = draw(st.integers(1, 8))
    names = [f"S{i}" for i in range(count)]
    deps = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }
    return draw(st.permutations(names)), deps


@given(dags())
@PLAN_SETTINGS
def test_steps_come_after_the_steps_they_depend_on(dag):
    order, deps = dag
    steps = [
        step(name, dependencies=[{"dependsOn": d} for d in deps[name]])
        if deps[name]
        else step(name)
        for name in order
    ]
    plans = plan_job(template(steps), {})
    assert sorted(p.name for p in plans) == sorted(order)
    position = {p.name: i for i, p in enumerate(plans)}
    for plan in plans:
        assert set(plan.depends_on) == set(deps[plan.name])
        for dependency in plan.depends_on:
            assert position[dependency] < position[plan.name]
        assert plan.tasks == ({},)
