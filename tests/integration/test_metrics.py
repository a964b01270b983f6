"""rayml's metrics reach Ray's Prometheus endpoint: run an executor, scrape, check.

The session's Ray runs without the dashboard; its per-node metrics agent (``ray[default]``)
still exports custom metrics on the node's ``MetricsExportPort``, so the shared runtime is used.
The same scrape holds every series the Grafana dashboard queries (``deploy/grafana``), but for
those only rare events make (``RARE``).
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
from tests.support.dashboard import load, queried_series
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

PREDICT = "breast_cancer.predict"
NO_SUCH = "no_such.pipeline"

EXPECTED = {
    "ray_rayml_requests_total",
    "ray_rayml_results_total",
    "ray_rayml_e2e_latency_ms_bucket",
    "ray_rayml_compute_latency_ms_bucket",
    "ray_rayml_batch_size_bucket",
    "ray_rayml_partition_lag",
    "ray_rayml_in_flight",
    "ray_rayml_in_flight_bytes",
    "ray_rayml_paused",
    "ray_rayml_pool_size",
    "ray_rayml_batches_queued",
    "ray_rayml_error_results_total",
    "ray_rayml_model_loads_total",
    "ray_rayml_model_cache_hits_total",
    "ray_rayml_training_jobs_total",
}

# Series the dashboard queries that this run does not make, each with why.
RARE = {
    # Only once the broker refuses a write; every write here succeeds.
    "ray_rayml_failed_deliveries_total",
    # Only while a rollout runs, or once the policy ended one (test_rollout_metrics.py).
    "ray_rayml_rollout_answers",
    "ray_rayml_rollout_labelled",
    "ray_rayml_rollout_accuracy",
    "ray_rayml_rollout_error_rate",
    "ray_rayml_rollout_p99_ms",
    "ray_rayml_rollout_agreement",
    "ray_rayml_rollout_decisions_total",
    # Only once a pool that went to zero was started again (tests/integration/test_pools.py).
    "ray_rayml_pool_cold_start_seconds",
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
        # Error results: params the pipeline refuses (answered by a worker batch), and a
        # pipeline that does not exist (answered by the ingest, never dispatched).
        bad_params = [f"bad-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
        no_such = [f"nosuch-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
        send_requests(
            settings,
            [
                *({"id": i, "pipeline": PREDICT, "params": {"features": "?"}} for i in bad_params),
                *(predict_request(i, [0.0], pipeline=NO_SUCH) for i in no_such),
            ],
        )
        got = collector.wait_for([*ids, bad_job["id"], *bad_params, *no_such], timeout_s=120)
        types = {i: [r.error.type if r.error else r.status for r in got[i]] for i in got}
        assert [types[i] for i in bad_params] == [["invalid_params"]] * len(bad_params)
        assert [types[i] for i in no_such] == [["unknown_pipeline"]] * len(no_such)
        errors = len(bad_params) + len(no_such)

        mine = {"ingest": f"{executor.instance_id}-i0"}

        dashboard = queried_series(load())
        assert dashboard >= RARE, "RARE names only series the dashboard queries"

        def problems(text: str) -> list[str]:
            found = scrape_names(text)
            wrong = [f"missing {name}" for name in sorted(EXPECTED - found)]
            wrong += [f"dashboard's {n} not exported" for n in sorted(dashboard - RARE - found)]
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
                "results error": (
                    series_sum(text, "ray_rayml_results_total", status="error", **mine),
                    errors,
                ),
                "requests error": (
                    series_sum(
                        text, "ray_rayml_requests_total", pipeline=PREDICT, status="error", **mine
                    ),
                    len(bad_params),
                ),
                "invalid_params": (
                    series_sum(
                        text,
                        "ray_rayml_error_results_total",
                        pipeline=PREDICT,
                        type="invalid_params",
                        **mine,
                    ),
                    len(bad_params),
                ),
                "unknown_pipeline": (
                    series_sum(
                        text,
                        "ray_rayml_error_results_total",
                        pipeline=NO_SUCH,
                        type="unknown_pipeline",
                        **mine,
                    ),
                    len(no_such),
                ),
                # Every error result is counted by type: the types add up to the total.
                "error results": (
                    series_sum(text, "ray_rayml_error_results_total", **mine),
                    errors,
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
