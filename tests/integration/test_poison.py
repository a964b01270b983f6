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
from tests.support.scenarios import slow_pipeline_settings, starved_topic, topic_with_config

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


def _table_row(
    kind: str, sent: int, ok: int, innocent: int, poison: str, took: float, end: bool
) -> None:
    """One row of the poison table in docs/architecture.md ("Poison, hangs and bounds")."""
    print(
        f"\nPOISON-TABLE | {kind} | {sent} | {ok}/{innocent} | {poison} | {took:.1f} s | "
        f"{'yes' if end else 'no'} |"
    )


def _poison_run(
    settings: Settings,
    pipeline: str,
    timeout_s: float,
    *,
    kind: str,
    error_type: str,
    worker_dies: bool,
    exception: str | None = None,
) -> None:
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
    ok = sum(len(rs) == 1 and rs[0].status == "ok" for rs in innocent)
    answer = poison.error.type if poison.error else poison.status
    _table_row(kind, INNOCENT + 1, ok, INNOCENT, answer, took, committed)
    print(f"{pipeline}: workers replaced {replaced}")
    not_ok = {
        i: [r.error or r.status for r in results[i]]
        for i in ids
        if results[i][0].status != "ok" or len(results[i]) != 1
    }
    assert ok == INNOCENT, f"innocent requests not answered ok once: {list(not_ok.items())[:3]}"
    assert poison.status == "error"
    assert poison.error is not None
    assert poison.error.type == error_type
    if exception is not None:
        assert poison.error.details["exception"] == exception
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in later.values())
    if worker_dies:
        assert poison.error.details["failures"] == max_attempts
        # One replacement per call that held the poison: log2(batch) halvings, then retries.
        assert 1 <= replaced <= 1 + math.ceil(math.log2(BATCH)) + max_attempts
    else:
        # The worker bisects a raising batch itself: no worker is lost.
        assert replaced == 0
    assert committed


def test_a_request_that_kills_its_worker_spares_its_batch_mates(
    settings: Settings, ray_runtime: str
) -> None:
    settings = slow_pipeline_settings(
        settings, max_batch_size=BATCH, max_in_flight=5_000, max_attempts=2
    )
    _poison_run(
        settings,
        "testing.killer",
        timeout_s=240,
        kind="kill (the pipeline ends its process)",
        error_type="retries_exhausted",
        worker_dies=True,
    )


def test_a_batch_that_hangs_is_ended_and_its_mates_answered(
    settings: Settings, ray_runtime: str
) -> None:
    settings = slow_pipeline_settings(
        # 5 s: the bound covers a fresh worker's model load too, which takes seconds on a
        # loaded 2-core machine; at 2 s an innocent batch was once ended as hung.
        settings,
        max_batch_size=BATCH,
        max_in_flight=5_000,
        max_attempts=2,
        batch_timeout_s=5.0,
    )
    _poison_run(
        settings,
        "testing.hang",
        timeout_s=300,
        kind="hang (batch_timeout_s=5)",
        error_type="retries_exhausted",
        worker_dies=True,
    )


def test_a_request_whose_pipeline_raises_is_answered_alone(
    settings: Settings, ray_runtime: str
) -> None:
    settings = slow_pipeline_settings(settings, max_batch_size=BATCH, max_in_flight=5_000)
    _poison_run(
        settings,
        "testing.poison",
        timeout_s=240,
        kind="raise (ValueError)",
        error_type="pipeline_failed",
        worker_dies=False,
        exception="ValueError",
    )


def test_a_request_whose_pipeline_runs_out_of_memory_is_answered_alone(
    settings: Settings, ray_runtime: str
) -> None:
    """A runaway allocation (16 GiB under an address-space limit) is refused with MemoryError:
    the pipeline's failure, answered for the poison alone. (A worker the OS or Ray's memory
    monitor kills instead is a worker death: the "kill" row, and dispatch's unit tests for
    ``OutOfMemoryError``.)"""
    settings = slow_pipeline_settings(settings, max_batch_size=BATCH, max_in_flight=5_000)
    _poison_run(
        settings,
        "testing.hog",
        timeout_s=240,
        kind="memory (a 16 GiB allocation refused)",
        error_type="pipeline_failed",
        worker_dies=False,
        exception="MemoryError",
    )


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


def _refusing_topic(settings: Settings) -> str:
    """A topic whose ``max.message.bytes`` (10) refuses every result, even an error's, and
    every transaction marker (78 bytes): had a transaction written it, that transaction could
    neither commit nor abort, and the ingest's ``transactional.id`` would answer
    ``CONCURRENT_TRANSACTIONS`` for good, on every restart too."""
    return topic_with_config(settings, "tiny", {"max.message.bytes": "10"})


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("poison", ["refusing reply topic", "bogus reply_to x100"])
def test_reply_topics_that_cannot_be_written_end_on_the_result_topic(
    settings: Settings, ray_runtime: str, delivery: str, poison: str
) -> None:
    """``reply_to`` names a topic that refuses every record, or one of 100 topics that do not
    exist: each such request is answered once on the result topic (a refused result as
    ``result_too_large``, an unwritable topic's result as it is), every other request is
    answered ``ok`` once, nothing loops, and every partition is committed to its end.
    Exactly-once gives the refusing topic up as a whole once it refused even the small error
    result: a few aborted transactions per topic, not two per request."""
    settings = slow_pipeline_settings(settings, max_batch_size=BATCH, max_in_flight=5_000)
    settings = settings.model_copy(
        update={"executor": settings.executor.model_copy(update={"delivery": delivery})}
    )
    if poison == "refusing reply topic":
        tiny = _refusing_topic(settings)
        targets = [tiny] * 20
    else:
        targets = [f"{settings.topics.output}.nope-{i}" for i in range(100)]
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings, isolation_level="read_committed")
    started = time.monotonic()
    try:
        rows = breast_cancer_rows(INNOCENT)
        ids = [f"r-{i}-{uuid.uuid4().hex[:6]}" for i in range(INNOCENT)]
        requests = [
            predict_request(rid, row.tolist(), pipeline="testing.slow")
            for rid, row in zip(ids, rows, strict=True)
        ]
        bad_ids = [f"bad-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(targets))]
        step = INNOCENT // len(targets)
        for i, (rid, topic) in enumerate(zip(bad_ids, targets, strict=True)):
            bad = predict_request(rid, [1.0] * 30, pipeline="testing.slow", reply_to=topic)
            requests.insert(i * (step + 1), bad)
        send_requests(settings, requests)
        results = collector.wait_for([*ids, *bad_ids], timeout_s=240)
        took = time.monotonic() - started
        collector.poll_until_quiet(1.0)
        committed = _committed_to_end(settings)
        status = executor.status()
    finally:
        executor.drain(15)
        collector.close()
    ok = sum(len(results[i]) == 1 and results[i][0].status == "ok" for i in ids)
    answers = {
        (r[0].error.type if r[0].error else r[0].status) for r in (results[i] for i in bad_ids)
    }
    _table_row(
        f"{poison} ({delivery})",
        len(requests),
        ok,
        INNOCENT,
        "/".join(sorted(answers)),
        took,
        committed,
    )
    if delivery == "exactly_once":
        print(f"aborted transactions: {sum(s['transaction_aborts'] for s in status)}")
    assert ok == INNOCENT
    assert all(len(results[i]) == 1 for i in bad_ids)
    if poison != "refusing reply topic":
        assert answers == {"ok"}
    elif delivery == "at_least_once":
        assert answers == {"result_too_large"}  # each result gets its one try there
    else:
        # Exactly-once gives up on a reply topic that refused even the small error result:
        # the results after that go to the result topic as they are (not two aborted
        # transactions per request).
        assert "result_too_large" in answers
        assert answers <= {"result_too_large", "ok"}
        assert sum(s["transaction_aborts"] for s in status) <= 6
    assert committed


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_training_request_on_the_inference_topic_is_refused_not_handed_off(
    settings: Settings, ray_runtime: str, delivery: str
) -> None:
    """Training travels on its own topic (the job runner reads it; docs/security.md): a training
    request on the inference topic is answered ``wrong_topic`` once, naming the training topic;
    nothing reaches the jobs topic (the ingest hands nothing off); the inference requests around
    it are answered ``ok``; the input is committed to its end."""
    settings = slow_pipeline_settings(settings, max_batch_size=BATCH, max_in_flight=5_000)
    settings = settings.model_copy(
        update={"executor": settings.executor.model_copy(update={"delivery": delivery})}
    )
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings, isolation_level="read_committed")
    started = time.monotonic()
    try:
        rows = breast_cancer_rows(INNOCENT)
        ids = [f"h-{i}-{uuid.uuid4().hex[:6]}" for i in range(INNOCENT)]
        requests: list[dict] = [
            predict_request(rid, row.tolist(), pipeline="testing.slow")
            for rid, row in zip(ids, rows, strict=True)
        ]
        train_id = f"train-{uuid.uuid4().hex[:6]}"
        train = {"id": train_id, "pipeline": "breast_cancer.train", "params": {"n_estimators": 5}}
        requests.insert(INNOCENT // 2, train)
        send_requests(settings, requests)
        results = collector.wait_for([*ids, train_id], timeout_s=240)
        took = time.monotonic() - started
        collector.poll_until_quiet(1.0)
        committed = _committed_to_end(settings)
        jobs = _count_records(settings, settings.topics.jobs)
    finally:
        executor.drain(15)
        collector.close()
    ok = sum(len(results[i]) == 1 and results[i][0].status == "ok" for i in ids)
    [answer] = results[train_id]
    kind = answer.error.type if answer.error else answer.status
    _table_row(
        f"a training request on the inference topic ({delivery})",
        len(requests),
        ok,
        INNOCENT,
        kind,
        took,
        committed,
    )
    assert ok == INNOCENT
    assert kind == "wrong_topic"
    assert answer.error is not None
    assert answer.error.details["use"] == settings.topics.jobs
    assert jobs == 0, "nothing reaches the jobs topic"
    assert committed


def _count_records(settings: Settings, topic: str) -> int:
    """Records a read_committed reader finds on ``topic`` (end offsets minus start offsets)."""
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"count-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = probe.list_topics(topic, timeout=10).topics[topic]
        total = 0
        probe.assign([TopicPartition(topic, p) for p in meta.partitions])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            total += sum(1 for m in probe.consume(500, timeout=0.5) if m.error() is None)
        return total
    finally:
        probe.close()


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_reply_topics_that_exist_but_fail_every_write_are_given_up_for_the_result_topic(
    settings: Settings, ray_runtime: str, delivery: str
) -> None:
    """``reply_to`` names a topic that exists but fails every write: its results are answered
    once on the result topic instead of holding their partitions' commits for ever; every other
    request is answered ``ok`` once, and every partition is committed to its end.

    At-least-once gives the topic up after 3 failed probes; exactly-once after its writes
    failed in 3 aborted transactions. This topic refuses transaction markers too
    (``message.timestamp.before.max.ms=0``): a transaction that wrote it could neither commit
    nor abort, leaving the ingest's ``transactional.id`` stuck for good. Exactly-once writes
    ``reply_to`` topics outside its transactions, so it cannot."""
    settings = slow_pipeline_settings(settings, max_batch_size=BATCH, max_in_flight=5_000)
    settings = settings.model_copy(
        update={"executor": settings.executor.model_copy(update={"delivery": delivery})}
    )
    starved = starved_topic(settings)
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings, isolation_level="read_committed")
    started = time.monotonic()
    try:
        rows = breast_cancer_rows(INNOCENT)
        ids = [f"r-{i}-{uuid.uuid4().hex[:6]}" for i in range(INNOCENT)]
        requests = [
            predict_request(rid, row.tolist(), pipeline="testing.slow")
            for rid, row in zip(ids, rows, strict=True)
        ]
        bad_ids = [f"starved-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
        step = INNOCENT // len(bad_ids)
        for i, rid in enumerate(bad_ids):
            bad = predict_request(rid, [1.0] * 30, pipeline="testing.slow", reply_to=starved)
            requests.insert(i * (step + 1), bad)
        send_requests(settings, requests)
        results = collector.wait_for([*ids, *bad_ids], timeout_s=240)
        took = time.monotonic() - started
        collector.poll_until_quiet(1.0)
        committed = _committed_to_end(settings)
        status = executor.status()
    finally:
        executor.drain(15)
        collector.close()
    ok = sum(len(results[i]) == 1 and results[i][0].status == "ok" for i in ids)
    answers = {r[0].status for r in (results[i] for i in bad_ids)}
    _table_row(
        f"a reply topic that exists and fails every write ({delivery})",
        len(requests),
        ok,
        INNOCENT,
        "/".join(sorted(answers)) + " on the result topic",
        took,
        committed,
    )
    failed = sum(s["failed_deliveries"] for s in status)
    print(f"failed deliveries: {failed}")
    assert ok == INNOCENT
    if delivery == "exactly_once":
        aborts = sum(s["transaction_aborts"] for s in status)
        print(f"aborted transactions: {aborts}")
        # Given up after its writes failed in 3 transactions (a write that failed after the
        # topic was asked about, in one more at most); never an abort loop.
        assert aborts <= 4
    else:
        # At most each bad request's first write, then 3 probes: not one try per waiting result.
        assert failed <= len(bad_ids) + 3
    assert all(len(results[i]) == 1 for i in bad_ids), "each answered once"
    assert answers == {"ok"}
    assert all(s["failing_topics"] == [] for s in status), "nothing left waiting for it"
    assert committed
