"""The layers' dependency rules (STYLE.md), read from every module's imports with `ast`.

Every import counts: at module level, inside functions (the lazy ones) and under
`if TYPE_CHECKING:`. A module belongs to its top-level package (`oprun.store.reads`
is `store`); a module directly under `oprun/` is a unit of its own (`oprun.server`
is `server`, `oprun/__init__.py` is `oprun`).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

ONLY: dict[str, set[str]] = {
    "domain": set(),
    "store": {"domain"},
    "service": {"domain", "store", "openjd"},
    # _version is one constant (the User-Agent's version), importing nothing.
    "sdk": {"domain", "_version"},
    "_humanize": set(),
}
"""Units that may import nothing of oprun but these (and themselves)."""

NEVER: dict[str, set[str]] = {
    "api": {"store", "web"},
    "web": {"store"},
    "worker": {"store", "service", "api", "web"},
    "cli": {"store"},
}
"""Units that must not import these: the store is service/'s alone."""

WEB_MAY_USE_OF_API = {"oprun.api.deps", "oprun.api.routing"}
"""The web UI shares the API's request dependencies (services, caller, same-origin check)
and the way routers join the app."""


def unit(module: str) -> str:
    """The unit a module belongs to: its top-level package, or itself under `oprun/`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: its dotted name, its file and whether it is a package."""
    found = {}
    for path in sorted((SRC / "oprun").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        found[".".join(parts)] = (path, package)
    return found


def imported(source: str, module: str, package: bool, known: set[str]) -> list[str]:
    """What `source` (the text of `module`) imports, as dotted names, wherever it imports.

    `from a import b` names `a.b` when that is a module, else `a`; relative imports
    are resolved against `module`'s package.
    """
    here = module if package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names += [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
    return names


@cache
def edges() -> dict[tuple[str, str], list[str]]:
    """Each unit-to-unit dependency, with the imports that make it (`module -> name`)."""
    known = set(modules())
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module, (path, package) in modules().items():
        for name in imported(path.read_text(encoding="utf-8"), module, package, known):
            if (name == "oprun" or name.startswith("oprun.")) and unit(name) != unit(module):
                found[unit(module), unit(name)].add(f"{module} -> {name}")
    return {pair: sorted(hows) for pair, hows in found.items()}


def test_imports_are_read_in_functions_and_type_checking_blocks_too() -> None:
    source = """
from typing import TYPE_CHECKING
import oprun.domain.models
from oprun.service import Services
from . import sibling
from ..store import reads

if TYPE_CHECKING:
    from oprun.sdk import Client

def later():
    from oprun.worker import agent
"""
    known = {"oprun.service", "oprun.api", "oprun.api.sibling", "oprun.store", "oprun.store.reads"}
    assert imported(source, "oprun.api.routes", False, known | {"oprun.worker.agent"}) == [
        "typing",
        "oprun.domain.models",
        "oprun.service",
        "oprun.api.sibling",
        "oprun.store.reads",
        "oprun.sdk",
        "oprun.worker.agent",
    ]


def test_every_unit_the_rules_name_exists() -> None:
    units = {unit(m) for m in modules()}
    named = set(ONLY) | set(NEVER) | {u for allowed in ONLY.values() for u in allowed}
    named |= {u for banned in NEVER.values() for u in banned}
    assert named <= units, f"rules name units that do not exist: {sorted(named - units)}"


@pytest.mark.parametrize("layer", sorted(ONLY))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    wrong = [
        how
        for (source, target), hows in sorted(edges().items())
        if source == layer and target not in ONLY[layer]
        for how in hows
    ]
    allowed = ", ".join(sorted(ONLY[layer])) or "nothing else of oprun"
    assert not wrong, f"{layer} may import only {allowed}; it imports:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_layer_never_imports_what_it_must_not(layer: str) -> None:
    wrong = [
        how
        for (source, target), hows in sorted(edges().items())
        if source == layer and target in NEVER[layer]
        for how in hows
    ]
    banned = ", ".join(sorted(NEVER[layer]))
    assert not wrong, f"{layer} must not import {banned}; it imports:\n" + "\n".join(wrong)


def test_web_takes_only_the_request_dependencies_from_the_api() -> None:
    wrong = [
        how
        for how in edges().get(("web", "api"), [])
        if how.partition(" -> ")[2] not in WEB_MAY_USE_OF_API
    ]
    assert not wrong, "web may import only oprun.api.deps of the API:\n" + "\n".join(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_cycles_finds_a_loop_and_nothing_in_a_tree() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges():
        graph[source].add(target)
    found = cycles(graph)
    detail = [
        how
        for group in found
        for (source, target), hows in sorted(edges().items())
        if source in group and target in group
        for how in hows[:3]
    ]
    assert not found, f"import cycles between {found}:\n" + "\n".join(detail)
