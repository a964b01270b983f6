"""The rollout series reach Ray's Prometheus endpoint, and leave it when the rollout ends.

:class:`rayml.metrics.RolloutMetrics` is flushed from this process, a Ray driver, as the rollout
monitor flushes it from the executor's driver, with the monitor's own figures
(:func:`rayml.rollouts.monitor.figures` over a real window); the series are read back from the
metrics agent's scrape.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

import pytest
import ray

from rayml.config import load_settings
from rayml.metrics import RolloutMetrics
from rayml.models.promotion import ServingRecord
from rayml.protocol.rollouts import Feedback, Rollout, VersionAnswer
from rayml.rollouts.quality import QualityWindow
from rayml.rollouts.status import figures

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GAUGES = (
    "ray_rayml_rollout_answers",
    "ray_rayml_rollout_labelled",
    "ray_rayml_rollout_accuracy",
    "ray_rayml_rollout_error_rate",
    "ray_rayml_rollout_p99_ms",
)


def scrape() -> list[str]:
    lines: list[str] = []
    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
                lines += response.read().decode().splitlines()
    return [line for line in lines if line.startswith("ray_rayml_rollout_")]


def values(lines: list[str], model: str) -> dict[tuple[str, ...], float]:
    """(name, version, role) -> value of ``model``'s rollout series (version, role: "" for
    the agreement; the action for decisions)."""
    found: dict[tuple[str, ...], float] = {}
    for line in lines:
        name, rest = line.split("{", 1)
        labels = dict(
            part.split("=", 1) for part in rest.rsplit("}", 1)[0].split(",") if "=" in part
        )
        if labels.get("model") != f'"{model}"':
            continue
        key = tuple(labels.get(k, '""').strip('"') for k in ("version", "role", "action"))
        found[(name, *key)] = float(line.rsplit(" ", 1)[1])
    return found


def window_with_answers(model: str, now_ms: int) -> QualityWindow:
    """Served 000001 and candidate 000002 (shadow) answered 10 requests; 8 labelled."""
    window = QualityWindow(3600, 1000)
    for version, role in (("000001", "serving"), ("000002", "shadow")):
        for i in range(10):
            window.add_answer(
                VersionAnswer(
                    id=f"r{i}",
                    model=model,
                    version=version,
                    role=role,
                    pipeline=f"{model}.predict",
                    status="ok",
                    output=1 if version == "000002" or i < 6 else 0,
                    compute_ms=3.0,
                    at_ms=now_ms,
                )
            )
    for i in range(8):
        window.add_feedback(Feedback(id=f"r{i}", label=1), now_ms)
    return window


def test_rollout_series_are_exported_while_it_runs_and_dropped_when_it_ends(
    ray_runtime: str,
) -> None:
    settings = load_settings()
    ended, running = f"m-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    windows = {m: window_with_answers(m, now_ms) for m in (ended, running)}
    rollout = Rollout(candidate="000002", mode="shadow", started_at_ms=now_ms)
    records = {m: ServingRecord(name=m, version="000001", rollout=rollout) for m in windows}
    decisions: list[dict[str, Any]] = []
    metrics = RolloutMetrics()

    def flush() -> None:  # what the monitor does every rollout.interval_s
        metrics.flush(
            [figures(windows[m], r, settings, now_ms + 1_000) for m, r in records.items()],
            decisions,
        )

    serving, candidate = (10, 8, 0.75, 0, 3), (10, 8, 1.0, 0, 3)  # in GAUGES' order
    want = {
        **{(g, "000001", "serving", ""): v for g, v in zip(GAUGES, serving, strict=True)},
        **{(g, "000002", "candidate", ""): v for g, v in zip(GAUGES, candidate, strict=True)},
        ("ray_rayml_rollout_agreement", "", "", ""): 0.6,
    }
    started = time.monotonic()
    while time.monotonic() - started < 60:
        flush()
        lines = scrape()
        if values(lines, ended) == want and values(lines, running) == want:
            break
        time.sleep(2)
    assert values(lines, ended) == want
    assert values(lines, running) == want
    shown = time.monotonic() - started

    # The policy promotes `ended`'s candidate: its record serves 000002, without a rollout.
    records[ended] = ServingRecord(name=ended, version="000002", action="promoted")
    decisions.append({"model": ended, "action": "promoted", "version": "000002"})
    promoted = {("ray_rayml_rollout_decisions_total", "", "", "promoted"): 1.0}
    started = time.monotonic()
    while time.monotonic() - started < 60:
        flush()
        lines = scrape()
        if values(lines, ended) == promoted and values(lines, running) == want:
            break
        time.sleep(2)
    assert values(lines, ended) == promoted, "the ended rollout's gauges are no longer exported"
    assert values(lines, running) == want
    print(f"rollout series shown after {shown:.1f}s, gone {time.monotonic() - started:.1f}s after")
