"""Every kind of bad input in one run: dead-lettered or answered, and the executor keeps serving."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from rayml.protocol.envelopes import dead_letter_from_headers
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows, store_breast_cancer

pytestmark = [pytest.mark.kafka, pytest.mark.ray]


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[Settings]:
    ex = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 1,
            "max_request_bytes": 4096,
            "pipeline_modules": ["tests.support.executor_pipelines"],
            "max_batch_wait_ms": 20.0,
        }
    )
    settings = settings.model_copy(update={"executor": ex})
    create_topics(settings.kafka, settings.topics)
    store_breast_cancer(settings.models.root, n_estimators=5)
    executor = Executor(settings)
    executor.start()
    try:
        yield settings
    finally:
        executor.drain(10)


def _dlq(settings: Settings, n: int, timeout_s: float = 60) -> list[object]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.dlq])
    got: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return got


def test_bad_inputs_are_dead_lettered_or_answered(running: Settings) -> None:
    settings = running
    row = breast_cancer_rows(1)[0].tolist()
    good = [predict_request(f"good-{i}", row) for i in range(3)]
    past = "2020-01-01T00:00:00Z"
    undecodable = [
        b"not json at all",
        b"[1, 2, 3]",
        json.dumps({"pipeline": "x"}).encode(),
        b'{"id": 42, "pipeline": "x"}',
        b"\xff\xfe\x00garbage",
    ]
    answered = {
        "unknown": (
            {"id": "unknown", "pipeline": "no.such.pipeline", "params": {}},
            "unknown_pipeline",
            "no.such.pipeline",
        ),
        "short": (predict_request("short", row[:5]), "invalid_params", "features"),
        "typo": (
            {"id": "typo", "pipeline": "breast_cancer.predict", "params": {"feature": row}},
            "invalid_params",
            "feature",
        ),
        "expired": (
            predict_request("expired", row, deadline=past),
            "deadline_exceeded",
            "deadline",
        ),
        "huge": (predict_request("huge", row, tenant="x" * 5000), "request_too_large", "bytes"),
        "badversion": (
            predict_request("badversion", row, model_version="../v3"),
            "invalid_request",
            "model_version",
        ),
        "missingversion": (
            predict_request("missingversion", row, model_version="999"),
            "version_not_found",
            "000999",
        ),
        "extra": (predict_request("extra", row, colour="blue"), "invalid_request", "colour"),
    }
    poison = [
        predict_request(f"mate-{i}", [1.0] * 30, pipeline="testing.poison") for i in range(9)
    ] + [predict_request("poisoned", [-1.0] * 30, pipeline="testing.poison")]
    # A reply_to topic that does not exist: the results come on the result topic instead.
    stray = [
        predict_request(f"stray-{i}", row, reply_to=f"{settings.topics.output}.nope")
        for i in range(20)
    ]
    collector = ResultCollector(settings)
    send_requests(
        settings, [*good, *undecodable, *(a[0] for a in answered.values()), *poison, *stray]
    )

    results = collector.wait_for(
        [
            *(g["id"] for g in good),
            *answered,
            *(p["id"] for p in poison),
            *(s["id"] for s in stray),
        ],
        timeout_s=120,
    )
    for s in stray:
        assert results[s["id"]][0].status == "ok", "an unwritable reply_to is not an error"
    for rid, (_req, error_type, named) in answered.items():
        (result,) = results[rid]
        assert result.status == "error"
        assert result.error is not None
        assert result.error.type == error_type, (rid, result.error)
        assert named in result.error.message + json.dumps(result.error.details), (rid, result.error)
    (poisoned,) = results["poisoned"]
    assert poisoned.status == "error"
    assert poisoned.error is not None
    assert poisoned.error.type == "pipeline_failed"
    assert "poisoned row" in poisoned.error.message
    for i in range(9):
        assert results[f"mate-{i}"][0].status == "ok", "batch-mates of a raising request succeed"
    for g in good:
        assert results[g["id"]][0].status == "ok"

    letters = _dlq(settings, len(undecodable))
    assert sorted(m.value() for m in letters) == sorted(undecodable)  # type: ignore[attr-defined]
    for msg in letters:
        info = dead_letter_from_headers(msg.headers())  # type: ignore[attr-defined]
        assert info.source_topic == settings.topics.input
        assert info.error_type
        assert info.source_offset >= 0

    # Still serving afterwards.
    send_requests(settings, [predict_request("after", row)])
    assert collector.wait_for(["after"], timeout_s=60)["after"][0].status == "ok"
    collector.close()
