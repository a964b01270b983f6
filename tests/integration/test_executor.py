"""The executor end to end on the real broker and a real local Ray."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

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
from tests.support.waiting import wait_until

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


def test_a_request_goes_to_a_busy_worker_with_room_at_once_not_after_the_batch_wait(
    settings: Settings, ray_runtime: str, tmp_path: Path
) -> None:
    """dispatch_when_idle counts a worker with room (max_batches_per_worker) as free: while
    the only worker runs a gated batch, a request polled meanwhile is sent to it at once, as
    its next batch, instead of waiting out a 3 s batch wait (it waited the whole wait when
    only a worker with nothing in flight counted)."""
    settings = executor_settings(
        settings,
        max_batch_wait_ms=3_000.0,
        num_workers=1,
        max_batches_per_worker=2,
        pipeline_modules=["pipelines", "tests.support.gated_pipelines"],
    )
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root)
    row = breast_cancer_rows(1)[0].tolist()
    gate = tmp_path / "gate"
    executor = Executor(settings)
    executor.start()
    try:
        collector = ResultCollector(settings)
        warm = f"warm-{uuid.uuid4().hex[:6]}"  # loads the model (and the gated pipeline)
        send_requests(settings, [gated_request(warm, row, gate)])
        collector.wait_for([warm], timeout_s=120)
        gate.touch()  # the next gated batch holds the worker until the test deletes this
        held, nxt = f"held-{uuid.uuid4().hex[:6]}", f"next-{uuid.uuid4().hex[:6]}"
        send_requests(settings, [gated_request(held, row, gate)])
        # The held batch is on the worker once the ingest counts it in flight.
        wait_until(
            lambda: executor.status()[0]["batches_in_flight"] == 1,
            "the held batch is on the worker",
            timeout_s=60,
        )
        send_requests(settings, [predict_request(nxt, row)])
        wait_until(
            lambda: executor.status()[0]["batches_in_flight"] == 2,
            "the next request's batch is sent behind it (not after the 3 s batch wait)",
            timeout_s=60,
        )
        gate.unlink()
        collector.wait_for([held, nxt], timeout_s=60)
        queued = collector.results[nxt][0].timings.queued_ms
        assert queued is not None
        assert queued < 1_000, queued
    finally:
        gate.unlink(missing_ok=True)
        executor.drain(10)


def gated_request(rid: str, row: list[float], gate: Path) -> dict[str, object]:
    return {"id": rid, "pipeline": "testing.gated", "params": {"features": row, "gate": str(gate)}}


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
