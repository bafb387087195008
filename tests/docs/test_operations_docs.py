"""docs/operations.md lists exactly the metrics oprun exposes; the dashboard and alerts use only those."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from oprun.service.metrics import Metrics
from oprun.store import Store, open_store
from oprun.worker.metrics import WorkerMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\boprun_[a-z_]+\b")
SUFFIXES = ("_bucket", "_count", "_sum")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('docs') / 'oprun.db'}")
    yield s
    s.close()


def _exposed(registry) -> set[str]:
    """Each family's name as a query uses it (a counter's with `_total`)."""
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
        if family.name.startswith("oprun_")
    }


def _documented() -> set[str]:
    rows = [
        line
        for line in (DOCS / "operations.md").read_text().splitlines()
        if line.startswith("| `oprun_")
    ]
    return {NAME.search(row).group(0) for row in rows}


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_metrics_table_lists_every_metric_and_no_other(store):
    exposed = _exposed(Metrics(store).registry) | _exposed(WorkerMetrics().registry)
    assert _documented() == exposed


def test_the_dashboard_and_alerts_query_only_metrics_that_exist(store):
    exposed = _exposed(Metrics(store).registry) | _exposed(WorkerMetrics().registry)
    dashboard = json.loads((DOCS / "grafana" / "oprun.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20 and dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    rules = yaml.safe_load((DOCS / "prometheus" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert all({"alert", "expr", "labels", "annotations"} <= set(r) for r in alerts)
    used = {_base(n) for e in exprs + [r["expr"] for r in alerts] for n in NAME.findall(e)}
    assert used <= exposed, used - exposed
    assert {"oprun_queue_oldest_waiting_seconds", "oprun_lease_lapses_total"} <= used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) not installed")
def test_promtool_accepts_the_alerting_rules():
    done = subprocess.run(
        ["promtool", "check", "rules", str(DOCS / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
