"""Reading the Grafana dashboard's queries: the panel walk and the metric names in PromQL.

Shared by ``tests/unit/test_dashboard.py`` (every query names a series ``rayml/metrics.py``
declares) and ``tests/integration/test_metrics.py`` (every series the dashboard queries is in a
real scrape of Ray's metrics export).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "rayml-dashboard.json"
METRIC = re.compile(r"\bray_rayml_[A-Za-z0-9_]*")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # PromQL strings: label values, regexes


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels in order, the panels nested in (collapsed) rows included."""
    found = []
    for panel in panels:
        found.append(panel)
        found += all_panels(panel.get("panels", []))
    return found


def metric_names(expr: str) -> list[str]:
    """The ``ray_rayml_*`` series a PromQL expression names (not those inside its strings)."""
    return METRIC.findall(QUOTED.sub('""', expr))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query: the query variables' definitions, then every panel
    target's ``expr``."""
    variables = dashboard.get("templating", {}).get("list", [])
    found = [
        (f"variable {v.get('name')}", str(v.get("definition", "")))
        for v in variables
        if v.get("type") == "query"
    ]
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            found.append((repr(panel.get("title")), str(target.get("expr", "")).strip()))
    return found


def queried_series(dashboard: dict[str, Any]) -> set[str]:
    """Every series name the dashboard's queries read."""
    return {name for _where, expr in queries(dashboard) for name in metric_names(expr)}
