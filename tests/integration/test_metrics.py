"""rayml's metrics reach Ray's Prometheus endpoint: run an executor, scrape, check.

The session's Ray runs without the dashboard; its per-node metrics agent (``ray[default]``)
still exports custom metrics on the node's ``MetricsExportPort``, so the shared runtime is used.
"""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
import ray

from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.metrics import scrape_names
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

PREDICT = "breast_cancer.predict"

EXPECTED = {
    "ray_rayml_requests_total",
    "ray_rayml_results_total",
    "ray_rayml_e2e_latency_ms_bucket",
    "ray_rayml_compute_latency_ms_bucket",
    "ray_rayml_batch_size_bucket",
    "ray_rayml_partition_lag",
    "ray_rayml_in_flight",
    "ray_rayml_pool_size",
    "ray_rayml_batches_queued",
    "ray_rayml_model_loads_total",
    "ray_rayml_model_cache_hits_total",
    "ray_rayml_training_jobs_total",
}


def scrape() -> str:
    texts = []
    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
                texts.append(response.read().decode())
    return "\n".join(texts)


def series_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_exported_to_prometheus(settings: Settings, ray_runtime: str) -> None:
    ex = settings.executor.model_copy(
        # Small batches: several per worker, so the second one finds its model cached.
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 10.0,
            "max_batch_size": 50,
        }
    )
    settings = settings.model_copy(update={"executor": ex})
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root)
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        ids = [f"m{i}-{uuid.uuid4().hex[:6]}" for i in range(500)]
        rows = breast_cancer_rows(len(ids))
        send_requests(
            settings, (predict_request(i, r.tolist()) for i, r in zip(ids, rows, strict=True))
        )
        # A training request that fails its parameter check: a training job outcome.
        bad_job = {
            "id": f"job-{uuid.uuid4().hex[:6]}",
            "pipeline": "breast_cancer.train",
            "params": {"n_estimators": "many"},
        }
        send_requests(settings, [bad_job], settings.topics.jobs)
        collector.wait_for([*ids, bad_job["id"]], timeout_s=120)

        mine = {"ingest": f"{executor.instance_id}-i0"}

        def problems(text: str) -> list[str]:
            found = scrape_names(text)
            wrong = [f"missing {name}" for name in sorted(EXPECTED - found)]
            checks = {
                "requests ok": (
                    series_sum(
                        text, "ray_rayml_requests_total", pipeline=PREDICT, status="ok", **mine
                    ),
                    len(ids),
                ),
                "results ok": (
                    series_sum(text, "ray_rayml_results_total", status="ok", **mine),
                    len(ids),
                ),
                "pool size": (series_sum(text, "ray_rayml_pool_size", **mine), 2),
                # Ray's exported histogram sum is rebuilt from bucket midpoints, not exact:
                # check the count (one per batch, batches of at most 50).
                "batches >= 10": (
                    series_sum(text, "ray_rayml_batch_size_count", pipeline=PREDICT, **mine)
                    >= len(ids) / 50,
                    True,
                ),
                "failed jobs": (
                    min(1.0, series_sum(text, "ray_rayml_training_jobs_total", status="failed")),
                    1,
                ),
            }
            wrong += [f"{k}: {got} != {want}" for k, (got, want) in checks.items() if got != want]
            return wrong

        # Ray exports about every 10 s, each metric on its own: wait until all are in.
        started = time.monotonic()
        while (wrong := problems(scrape())) and time.monotonic() - started < 60:
            time.sleep(2)
        assert not wrong, f"Prometheus endpoint after 60 s: {wrong}"
        print(f"metrics visible {time.monotonic() - started:.1f}s after the last result")
    finally:
        collector.close()
        executor.drain(10)
