"""The executor end to end on the real broker and a real local Ray."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from tests.support.kafka_io import (
    ResultCollector,
    committed_equals_end,
    predict_request,
    send_requests,
)
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray]


def executor_settings(settings: Settings, **executor: object) -> Settings:
    ex = settings.executor.model_copy(
        update={"worker_num_cpus": 0.5, "num_workers": 2, "drain_timeout_s": 10.0, **executor}
    )
    return settings.model_copy(update={"executor": ex})


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[tuple[Executor, Settings]]:
    settings = executor_settings(settings)
    create_topics(settings.kafka, settings.topics)
    executor = Executor(settings)
    executor.start()
    try:
        yield executor, settings
    finally:
        executor.drain(10)


@pytest.mark.slow
def test_ten_thousand_predictions_exact_and_committed(running: tuple[Executor, Settings]) -> None:
    executor, settings = running
    version, model = store_breast_cancer(settings.models.root)
    rows = breast_cancer_rows(10_000)
    proba = model.predict_proba(rows)
    expected_label = proba.argmax(axis=1)
    expected_proba = proba.max(axis=1)
    ids = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(len(rows))]
    collector = ResultCollector(settings)
    send_requests(
        settings, (predict_request(i, row.tolist()) for i, row in zip(ids, rows, strict=True))
    )

    results = collector.wait_for(ids, timeout_s=180)
    assert len(results) == 10_000
    for i, rid in enumerate(ids):
        (result,) = results[rid][:1]
        assert result.status == "ok", result.error
        assert result.model is not None
        assert result.model.version == version.version
        assert result.result["label"] == int(expected_label[i])
        assert result.result["probability"] == pytest.approx(float(expected_proba[i]), abs=1e-6)
    assert sum(len(r) for r in results.values()) == 10_000, "no duplicates without failures"

    committed, ends = committed_equals_end(
        settings, settings.topics.input, settings.executor.group_id, 4
    )
    assert committed == ends
    assert sum(ends.values()) == 10_000
    status = executor.status()
    assert sum(s["results_ok"] for s in status) == 10_000
    assert all(s["in_flight"] == 0 for s in status)
    collector.close()


def test_an_idle_executor_sends_a_request_at_once_not_after_the_batch_wait(
    settings: Settings, ray_runtime: str
) -> None:
    """dispatch_when_idle: with a batch wait of 3 s, a lone request on an idle executor is
    still sent to a worker within a second of being produced (results' timings.queued_ms)."""
    settings = executor_settings(settings, max_batch_wait_ms=3_000.0, num_workers=1)
    assert settings.executor.dispatch_when_idle  # the default
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root)
    row = breast_cancer_rows(1)[0].tolist()
    executor = Executor(settings)
    executor.start()
    try:
        collector = ResultCollector(settings)
        warm = f"warm-{uuid.uuid4().hex[:6]}"  # loads the model; its batch may have waited
        send_requests(settings, [predict_request(warm, row)])
        collector.wait_for([warm], timeout_s=120)
        ids = [f"lone-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
        for rid in ids:  # one at a time: each finds the worker idle
            send_requests(settings, [predict_request(rid, row)])
            collector.wait_for([rid], timeout_s=60)
        queued = [collector.results[rid][0].timings.queued_ms for rid in ids]
        assert all(q is not None and q < 1_000 for q in queued), queued
    finally:
        executor.drain(10)
