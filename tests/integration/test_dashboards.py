"""Every Grafana panel queries something that exists: a metric the worker exports, or SQL
that ClickHouse runs against the worker's schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics
from streams.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
METRIC_NAME = re.compile(r"\b(attribution_[a-z0-9_]+|up)\b(?=\s*[{\[)])")
GRAFANA_TIME_FILTER = re.compile(r"\$__timeFilter\(([\w.]+)\)")


def exported_sample_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SAMPLE_SUFFIXES[family.type]
    } | {"up"}


def targets(kind: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    found.append((f"{path.name}: {panel['title']}", target))
    return found


def as_clickhouse_sql(raw: str) -> str:
    """What Grafana would send: the model variable and the time-range macro filled in."""
    sql = raw.replace("${model}", "last_click")
    return GRAFANA_TIME_FILTER.sub(r"\1 >= toDateTime64('2000-01-01 00:00:00', 6, 'UTC')", sql)


def test_both_dashboards_have_prometheus_and_clickhouse_panels() -> None:
    names = {path.name for path in (GRAFANA / "dashboards").glob("*.json")}
    assert names == {"pipeline-health.json", "campaign-performance.json"}
    assert len(targets("prometheus")) >= 20
    assert len(targets("grafana-clickhouse-datasource")) >= 4


def test_every_prometheus_query_names_exported_metrics() -> None:
    exported = exported_sample_names()
    for where, target in targets("prometheus"):
        named = set(METRIC_NAME.findall(target["expr"]))
        assert named, f"{where}: no metric in {target['expr']}"
        assert named <= exported, f"{where}: unknown {named - exported}"


def test_every_clickhouse_query_runs_on_the_worker_schema(worker: WorkerProcess) -> None:
    for where, target in targets("grafana-clickhouse-datasource"):
        try:
            worker.sql(as_clickhouse_sql(target["rawSql"]))
        except RuntimeError as error:
            raise AssertionError(f"{where}: {error}") from error
