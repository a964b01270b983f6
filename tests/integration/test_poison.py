"""A poison request never takes its batch-mates down: one that kills its worker, one that hangs.

Driven for real: the pipeline ends its own worker process (``os._exit``) or blocks for ever when
it sees the poison row. The guarantees (docs/architecture.md, "Workers and failures"): every
innocent request is answered ``ok`` exactly once; the poison is answered ``retries_exhausted``
after ``max_attempts`` failures charged to it alone; it costs O(log n) worker replacements; the
executor keeps serving and commits every partition to its end.
"""

from __future__ import annotations

import math
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from rayml.config import Settings
from rayml.executor.service import Executor
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows
from tests.support.scenarios import slow_pipeline_settings

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]

INNOCENT = 1_500
BATCH = 256


def _send(settings: Settings, pipeline: str, n: int, poison_at: int | None) -> tuple[list, str]:
    rows = breast_cancer_rows(n)
    ids = [f"{pipeline}-{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    requests = [
        predict_request(rid, row.tolist(), pipeline=pipeline)
        for rid, row in zip(ids, rows, strict=True)
    ]
    poison_id = f"poison-{uuid.uuid4().hex[:8]}"
    if poison_at is not None:
        requests.insert(poison_at, predict_request(poison_id, [-1.0] * 30, pipeline=pipeline))
    send_requests(settings, requests)
    return ids, poison_id


def _committed_to_end(settings: Settings, timeout_s: float = 30.0) -> bool:
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.executor.group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [
            TopicPartition(settings.topics.input, p)
            for p in range(settings.topics.input_partitions)
        ]
        deadline = time.monotonic() + timeout_s
        while True:
            committed = probe.committed(parts, timeout=10)
            ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
            if all(max(c.offset, 0) == e for c, e in zip(committed, ends, strict=True)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
    finally:
        probe.close()


def _poison_run(settings: Settings, pipeline: str, timeout_s: float) -> None:
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    started = time.monotonic()
    try:
        ids, poison_id = _send(settings, pipeline, INNOCENT, poison_at=INNOCENT // 2)
        results = collector.wait_for([*ids, poison_id], timeout_s=timeout_s)
        took = time.monotonic() - started
        # Still serving afterwards.
        after, _ = _send(settings, pipeline, 50, poison_at=None)
        later = collector.wait_for(after, timeout_s=60)
        status = executor.status()
        committed = _committed_to_end(settings)
    finally:
        executor.drain(15)
        collector.close()
    innocent = [results[i] for i in ids]
    replaced = sum(s["workers_replaced"] for s in status)
    max_attempts = settings.executor.max_attempts
    [poison] = results[poison_id]
    print(
        f"\n{pipeline}: {INNOCENT} innocent + 1 poison answered in {took:.1f}s; "
        f"poison -> {poison.error.type if poison.error else poison.status}; "
        f"workers replaced {replaced}; committed to the end: {committed}"
    )
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in innocent)
    assert poison.status == "error"
    assert poison.error is not None
    assert poison.error.type == "retries_exhausted"
    assert poison.error.details["failures"] == max_attempts
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in later.values())
    # One replacement per call that held the poison: log2(batch) halvings, then its retries.
    assert 1 <= replaced <= 1 + math.ceil(math.log2(BATCH)) + max_attempts
    assert committed


def test_a_request_that_kills_its_worker_spares_its_batch_mates(
    settings: Settings, ray_runtime: str
) -> None:
    settings = slow_pipeline_settings(
        settings, max_batch_size=BATCH, max_in_flight=5_000, max_attempts=2
    )
    _poison_run(settings, "testing.killer", timeout_s=240)


def test_a_batch_that_hangs_is_ended_and_its_mates_answered(
    settings: Settings, ray_runtime: str
) -> None:
    settings = slow_pipeline_settings(
        settings, max_batch_size=BATCH, max_in_flight=5_000, max_attempts=2, batch_timeout_s=2.0
    )
    _poison_run(settings, "testing.hang", timeout_s=300)


def test_requests_whose_deadline_passes_while_queued_are_answered_without_running(
    settings: Settings, ray_runtime: str
) -> None:
    """A backlog behind a slow pipeline (0.1 s a batch of 10, one worker): requests whose
    deadline passes while they wait are answered ``deadline_exceeded`` at dispatch; the others
    run; every request gets exactly one answer."""
    from datetime import UTC, datetime, timedelta

    settings = slow_pipeline_settings(
        settings, max_batch_size=10, num_workers=1, max_in_flight=2_000
    )
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        rows = breast_cancer_rows(600)
        deadline = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        ids = [f"d-{i}-{uuid.uuid4().hex[:6]}" for i in range(600)]
        send_requests(
            settings,
            (
                predict_request(rid, row.tolist(), pipeline="testing.slow", deadline=deadline)
                if i >= 300
                else predict_request(rid, row.tolist(), pipeline="testing.slow")
                for i, (rid, row) in enumerate(zip(ids, rows, strict=True))
            ),
        )
        results = collector.wait_for(ids, timeout_s=120)
    finally:
        executor.drain(15)
        collector.close()
    assert all(len(rs) == 1 for rs in results.values())
    without = [results[i][0] for i in ids[:300]]
    with_deadline = [results[i][0] for i in ids[300:]]
    assert all(r.status == "ok" for r in without)
    expired = [r for r in with_deadline if r.status == "error"]
    print(f"\ndeadlines: {len(expired)} of 300 answered deadline_exceeded without running")
    # 600 requests at ~100 per second: those still queued 3 s in cannot have run.
    assert len(expired) >= 100
    assert {r.error.type for r in expired if r.error} == {"deadline_exceeded"}
