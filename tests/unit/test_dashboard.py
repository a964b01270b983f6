"""The Grafana dashboard queries only metrics rayml exports, under the names Ray exports them.

The exported set is derived from ``rayml/metrics.py`` itself: the names passed to its
declaration helpers (``_counter``, ``_gauge``, ``_histogram``), read with ``ast`` since they are
declared inside the recorders' constructors. Ray prefixes them with ``ray_``; a counter is
exported as ``<name>_total``, a gauge as ``<name>``, a histogram as ``<name>_bucket``, ``_sum``
and ``_count`` (what ``tests/integration/test_metrics.py`` scrapes from a running executor).
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import pytest

import rayml.metrics
from tests.support.dashboard import METRIC, all_panels, load, metric_names, queries

HELPERS = {"_counter": "counter", "_gauge": "gauge", "_histogram": "histogram"}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
PANEL_TYPES = {"timeseries", "stat"}
VARIABLE = re.compile(r"\$\{?(\w+)")


def declared() -> dict[str, str]:
    """Metric name -> kind, for every ``_counter/_gauge/_histogram("name", ...)`` call."""
    tree = ast.parse(inspect.getsource(rayml.metrics))
    kinds: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in HELPERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            kinds[node.args[0].value] = HELPERS[node.func.id]
    return kinds


def exported() -> dict[str, str]:
    """Every series name Prometheus holds for rayml -> the declared metric it belongs to."""
    return {
        f"ray_{name}{suffix}": f"ray_{name}"
        for name, kind in declared().items()
        for suffix in SUFFIXES[kind]
    }


def histograms() -> set[str]:
    return {f"ray_{name}" for name, kind in declared().items() if kind == "histogram"}


def problems(dashboard: dict[str, Any], series: dict[str, str]) -> list[str]:
    """What is wrong with ``dashboard``; empty when nothing is."""
    wrong: list[str] = []
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        wrong.append("no datasource variable of type prometheus named 'datasource'")
    if dashboard.get("schemaVersion", 0) < 39:
        wrong.append(f"schemaVersion {dashboard.get('schemaVersion')} < 39")
    ids: list[Any] = []
    for panel in all_panels(dashboard.get("panels", [])):
        ids.append(panel.get("id"))
        title = panel.get("title")
        if not title:
            wrong.append(f"panel {panel.get('id')} has no title")
        if panel.get("type") == "row":
            continue
        if panel.get("type") not in PANEL_TYPES:
            wrong.append(f"{title!r}: type {panel.get('type')!r} not in {sorted(PANEL_TYPES)}")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            wrong.append(f"{title!r}: datasource is not ${{datasource}}")
        targets = panel.get("targets", [])
        if not targets:
            wrong.append(f"{title!r} has no target")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                wrong.append(f"{title!r}: target {target.get('refId')} has an empty expr")
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates:
        wrong.append(f"panel ids used twice: {duplicates}")
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        for name in names:
            if name not in series:
                wrong.append(f"{where}: {name} is not a series rayml exports")
            elif name.endswith("_bucket") and "histogram_quantile" not in expr:
                wrong.append(f"{where}: {name} outside histogram_quantile")
        if "histogram_quantile" in expr and not all(n.endswith("_bucket") for n in names):
            wrong.append(f"{where}: histogram_quantile over {names}, not only _bucket series")
        for name in set(VARIABLE.findall(expr)):
            if not name.startswith("__") and name not in variables:
                wrong.append(f"{where}: ${name} is not a dashboard variable")
    return wrong


def test_the_names_declared_in_metrics_py_are_the_ones_its_docstring_lists() -> None:
    # The ast reading above must not miss a declaration: the module's table of what rayml
    # exports names counters with _total, gauges and histograms by their base name.
    kinds = declared()
    listed = set(METRIC.findall(rayml.metrics.__doc__ or ""))
    assert listed == {
        f"ray_{name}_total" if kind == "counter" else f"ray_{name}" for name, kind in kinds.items()
    }
    assert set(kinds.values()) == {"counter", "gauge", "histogram"}


def test_the_dashboard_queries_only_metrics_rayml_exports() -> None:
    assert problems(load(), exported()) == []


def test_every_metric_rayml_exports_is_on_the_dashboard() -> None:
    series = exported()
    shown = {
        series[name]
        for panel in all_panels(load()["panels"])
        for target in panel.get("targets", [])
        for name in metric_names(target["expr"])
        if name in series
    }
    assert set(series.values()) - shown == set()


def test_every_histogram_has_a_percentile_panel_over_its_buckets() -> None:
    quantiles = {
        name.removesuffix("_bucket")
        for panel in all_panels(load()["panels"])
        for target in panel.get("targets", [])
        if "histogram_quantile(" in target["expr"] and "rate(" in target["expr"]
        for name in metric_names(target["expr"])
    }
    assert histograms() <= quantiles


def test_the_dashboard_filters_by_ingest_and_pipeline() -> None:
    names = {v["name"] for v in load()["templating"]["list"]}
    assert {"datasource", "ingest", "pipeline"} <= names


def tiny(*exprs: str, panel_type: str = "timeseries") -> dict[str, Any]:
    """A dashboard of one collapsed row holding one panel per expr."""
    source = {"type": "prometheus", "uid": "${datasource}"}
    nested = [
        {
            "id": 10 + i,
            "type": panel_type,
            "title": f"panel {i}",
            "datasource": source,
            "targets": [{"refId": "A", "expr": expr}],
        }
        for i, expr in enumerate(exprs)
    ]
    return {
        "schemaVersion": 39,
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]
        },
        "panels": [{"id": 1, "type": "row", "title": "row", "collapsed": True, "panels": nested}],
    }


def check(dashboard: dict[str, Any]) -> list[str]:
    return problems(dashboard, exported())


def test_the_checker_passes_a_good_tiny_dashboard() -> None:
    assert check(tiny("sum(rate(ray_rayml_requests_total[5m]))")) == []


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "sum(rate(ray_rayml_nope_total[5m]))",
            "'panel 0': ray_rayml_nope_total is not a series rayml exports",
        ),
        # A counter without the _total Ray adds: Prometheus has no such series.
        (
            "rate(ray_rayml_requests[5m])",
            "'panel 0': ray_rayml_requests is not a series rayml exports",
        ),
        (
            "ray_rayml_pool_size_total",
            "'panel 0': ray_rayml_pool_size_total is not a series rayml exports",
        ),
        (
            "histogram_quantile(0.9, rate(ray_rayml_e2e_latency_ms_sum[5m]))",
            "'panel 0': histogram_quantile over ['ray_rayml_e2e_latency_ms_sum'], "
            "not only _bucket series",
        ),
        (
            "sum(rate(ray_rayml_compute_latency_ms_bucket[5m]))",
            "'panel 0': ray_rayml_compute_latency_ms_bucket outside histogram_quantile",
        ),
        ("   ", "'panel 0': target A has an empty expr"),
        (
            'ray_rayml_pool_size{ingest=~"$ingest"}',
            "'panel 0': $ingest is not a dashboard variable",
        ),
    ],
)
def test_the_checker_catches_a_bad_query(expr: str, message: str) -> None:
    assert check(tiny(expr)) == [message]


def test_the_checker_wants_a_histogram_s_buckets_in_a_percentile() -> None:
    assert check(tiny("histogram_quantile(0.9, rate(ray_rayml_e2e_latency_ms[5m]))")) == [
        "'panel 0': ray_rayml_e2e_latency_ms is not a series rayml exports",
        "'panel 0': histogram_quantile over ['ray_rayml_e2e_latency_ms'], not only _bucket series",
    ]


def test_the_checker_ignores_metric_names_inside_label_values() -> None:
    assert check(tiny('ray_rayml_pool_size{ingest="ray_rayml_nope"}')) == []


def test_the_checker_catches_a_bad_dashboard_shape() -> None:
    bad = tiny("ray_rayml_in_flight", "ray_rayml_paused", panel_type="graph")
    bad["schemaVersion"] = 27
    bad["templating"]["list"] = []
    nested = bad["panels"][0]["panels"]
    nested[1]["id"] = nested[0]["id"]
    nested[1]["title"] = ""
    nested.append({"id": 99, "type": "stat", "title": "empty", "datasource": {"uid": "prom"}})
    assert check(bad) == [
        "no datasource variable of type prometheus named 'datasource'",
        "schemaVersion 27 < 39",
        "'panel 0': type 'graph' not in ['stat', 'timeseries']",
        "panel 10 has no title",
        "'': type 'graph' not in ['stat', 'timeseries']",
        "'empty': datasource is not ${datasource}",
        "'empty' has no target",
        "panel ids used twice: [10]",
    ]
