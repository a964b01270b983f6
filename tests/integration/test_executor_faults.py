"""Crashes and shutdowns mid-burst lose no request: SIGKILL, a dead worker, SIGTERM, a backlog.

Each test counts requests and results by id. Figures (duplicates, drain time, peak RSS) are
printed so that `pytest -s` shows them; the assertions carry the guarantees. The waits of a test
share one :class:`~tests.support.waiting.Budget`, so they never add up past its timeout.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import psutil
import pytest
import ray
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rayml.config import Settings
from rayml.executor.service import Executor, ingest_memory
from rayml.kafka.topics import create_topics
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import (
    CLIENT_LOG,
    ResultCollector,
    committed_equals_end,
    predict_request,
    send_requests,
)
from tests.support.models import breast_cancer_rows
from tests.support.scenarios import redo_bound, slow_pipeline_settings
from tests.support.waiting import Budget, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]

N = 10_000
# docs/architecture.md: "A 200,000-record backlog behind a slow pipeline keeps the ingest at
# ~170 MiB RSS" (173 MiB measured in each run of the test); half as much again for headroom.
BACKLOG_RSS_BOUND = 256 * 2**20
# The waits of one test (runs take 20-40 s here): within pytest's 300 s, with room for the
# fixtures, a drain bounded on its own (SIGTERM: drain_timeout_s + 30) and the stops.
WAIT_BUDGET_S = 150.0


@pytest.fixture
def fault_settings(settings: Settings) -> Settings:
    return slow_pipeline_settings(settings)


def _burst(settings: Settings, n: int = N, pipeline: str = "testing.slow") -> list[str]:
    rows = breast_cancer_rows(n)
    ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    send_requests(
        settings,
        (
            predict_request(rid, row.tolist(), pipeline=pipeline)
            for rid, row in zip(ids, rows, strict=True)
        ),
    )
    return ids


def _lag(settings: Settings) -> tuple[int, int]:
    """(uncommitted records, end offsets total) of the executor's group on the input topic."""
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
        committed = probe.committed(parts, timeout=10)
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        done = [max(c.offset, 0) for c in committed]
        return sum(e - d for e, d in zip(ends, done, strict=True)), sum(ends)
    finally:
        probe.close()


def _wait_some(collector: ResultCollector, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while len(collector.results) < at_least and time.monotonic() < deadline:
        collector.poll()
    return len(collector.results)


def test_sigkill_mid_burst_then_restart_loses_nothing(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    budget = Budget(WAIT_BUDGET_S)
    collector = ResultCollector(settings)
    first = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        ids = _burst(settings)
        seen = _wait_some(collector, N // 4, budget.left(60))
        first.kill()
    finally:
        first.kill()
    uncommitted, _ = _lag(settings)
    print(f"\nSIGKILL after {seen} results; {uncommitted} records uncommitted at the kill")
    assert seen < N, "the kill must land mid-burst"

    second = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        results = collector.wait_for(ids, timeout_s=budget.left(180))
    finally:
        second.stop()
    duplicated = sum(len(r) - 1 for r in results.values())
    # What the design lets run twice: each ingest's window and one commit interval of results.
    design_bound = redo_bound(settings, settings.executor.ingest_actors)
    print(
        f"SIGKILL: sent {N}, answered {len(results)}, duplicated {duplicated} "
        f"(bound: {design_bound})"
    )
    assert all(any(r.status == "ok" for r in rs) for rs in results.values())
    # Only records that were in flight (not committed) at the kill may run twice, and of those
    # no more than the window and one commit interval hold.
    assert duplicated <= uncommitted
    assert duplicated <= design_bound
    collector.close()


def test_killing_a_worker_mid_burst_loses_nothing(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    budget = Budget(WAIT_BUDGET_S)
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 5, budget.left(60))
        workers = [w for s in executor.status() for w in s["workers"]]
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)  # a Ray worker process this test's executor started
        results = collector.wait_for(ids, timeout_s=budget.left(180))
        status = executor.status()
    finally:
        executor.drain(15)
    assert all(any(r.status == "ok" for r in rs) for rs in results.values())
    assert sum(s["workers_replaced"] for s in status) >= 1
    assert sum(s["pool_size"] for s in status) == settings.executor.num_workers
    print(
        f"\nworker kill: sent {N}, answered {len(results)}, "
        f"duplicated {sum(len(r) - 1 for r in results.values())}"
    )
    collector.close()


def test_sigterm_mid_burst_drains_commits_and_restart_has_no_duplicates(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    budget = Budget(WAIT_BUDGET_S)
    collector = ResultCollector(settings)
    first = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 4, budget.left(60))
        took = first.terminate(timeout_s=settings.executor.drain_timeout_s + 30)
    finally:
        first.kill()
    assert first.proc is not None
    assert first.proc.returncode == 0, "\n".join(first.log[-30:])
    # Everything answered before the exit is committed: what is left is exactly what wasn't.
    collector.poll_until_quiet()
    answered_before = len(collector.results)
    uncommitted, total = _lag(settings)
    print(
        f"\nSIGTERM: exited in {took:.1f}s after {answered_before} results; "
        f"{uncommitted} records left uncommitted"
    )
    assert took <= settings.executor.drain_timeout_s + 15
    assert total - uncommitted == answered_before

    second = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        results = collector.wait_for(ids, timeout_s=budget.left(180))
    finally:
        second.stop()
    duplicated = sum(len(r) - 1 for r in results.values())
    print(f"SIGTERM + restart: sent {N}, answered {len(results)}, duplicated {duplicated}")
    assert duplicated == 0
    collector.close()


def test_backlog_pauses_partitions_and_memory_stays_bounded(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    ex = settings.executor.model_copy(update={"max_in_flight": 5_000, "max_batch_size": 512})
    settings = settings.model_copy(update={"executor": ex})
    backlog = 200_000
    _burst(settings, backlog, pipeline="testing.slow")
    # Memory is watched while the ingest works through ten in-flight windows of the backlog
    # (a pause and a resume each), however long that takes on this machine.
    enough = 10 * ex.max_in_flight
    executor = Executor(settings)
    executor.start()
    peak_rss, peak_in_flight, paused_seen, done = 0, 0, False, 0
    started = time.monotonic()
    try:

        def worked_through() -> bool:
            nonlocal peak_rss, peak_in_flight, paused_seen, done
            status = executor.status()
            for s in status:
                peak_rss = max(peak_rss, psutil.Process(s["pid"]).memory_info().rss)
                peak_in_flight = max(peak_in_flight, s["in_flight"])
                paused_seen = paused_seen or s["paused"]
            done = sum(s["results_ok"] for s in status)
            return paused_seen and done >= enough

        wait_until(
            worked_through, f"{enough} of the backlog are answered", timeout_s=90, every_s=0.5
        )
        took_s = time.monotonic() - started
    finally:
        executor.drain(15)
    print(
        f"\nbacklog {backlog}: peak ingest RSS {peak_rss / 2**20:.0f} MiB, "
        f"peak in flight {peak_in_flight}, {done} answered in {took_s:.0f} s"
    )
    # The window holds: a poll takes no more than it has room for; only a record of a
    # partition whose pause did not hold yet (one per partition) may come on top.
    assert peak_in_flight <= ex.max_in_flight + settings.topics.input_partitions
    assert peak_rss < BACKLOG_RSS_BOUND, f"peak ingest RSS {peak_rss / 2**20:.0f} MiB"


def test_resizing_the_pool_mid_burst_loses_nothing(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    budget = Budget(WAIT_BUDGET_S)
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 5, budget.left(60))
        executor.resize(1)  # the newest worker drains its batches, then ends
        _wait_some(collector, N // 2, budget.left(60))
        executor.resize(3)
        results = collector.wait_for(ids, timeout_s=budget.left(180))
        status = executor.status()
    finally:
        executor.drain(15)
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
    assert sum(s["pool_size"] for s in status) == 3
    assert sum(s["workers_replaced"] for s in status) == 0, "shrinking is a drain, not a kill"
    collector.close()


MIB = 1024**2


def test_a_backlog_of_large_requests_pauses_on_bytes_and_loses_nothing(
    settings: Settings, ray_runtime: str
) -> None:
    """300 requests of ~1 MiB behind a 32 MiB byte budget (the record budget, 1,000, never
    binds): the ingest holds at most the budget, pauses on bytes, answers every request once
    and commits to the end."""
    n, budget = 300, 32 * MIB
    # The input topic takes records over Kafka's 1 MiB default.
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    big = {"max.message.bytes": str(4 * MIB)}
    for future in admin.create_topics(
        [NewTopic(settings.topics.input, settings.topics.input_partitions, 1, config=big)]
    ).values():
        future.result(30)
    settings = slow_pipeline_settings(
        settings, max_in_flight_bytes=budget, max_request_bytes=2 * MIB
    )
    pad = "x" * (MIB - 1_000)
    rows = breast_cancer_rows(n)
    ids = [f"{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "message.max.bytes": 4 * MIB,
            "enable.idempotence": True,
        }
    )
    sizes = []
    for rid, row in zip(ids, rows, strict=True):
        request = predict_request(rid, row.tolist(), pipeline="testing.slow")
        request["params"]["pad"] = pad  # ignored by the pipeline's params model
        value = json.dumps(request).encode()
        sizes.append(len(value))
        producer.produce(settings.topics.input, value=value, key=rid.encode())
        producer.poll(0)
    assert producer.flush(60) == 0
    reserved = ingest_memory(settings)
    executor = Executor(settings)
    started = time.monotonic()
    executor.start()
    collector = ResultCollector(settings)
    peak_rss, peak_records, paused_seen, reservation_seen = 0, 0, False, 0.0
    try:
        deadline = time.monotonic() + 180
        while not set(ids) <= collector.results.keys() and time.monotonic() < deadline:
            collector.poll(0.2)
            for s in executor.status():
                peak_rss = max(peak_rss, psutil.Process(s["pid"]).memory_info().rss)
                peak_records = max(peak_records, s["in_flight"])
                paused_seen = paused_seen or s["paused"]
            held_by_actors = ray.cluster_resources()["memory"] - ray.available_resources()["memory"]
            reservation_seen = max(reservation_seen, held_by_actors)
        took = time.monotonic() - started
        results = collector.wait_for(ids, timeout_s=30)
        committed, ends = committed_equals_end(
            settings, settings.topics.input, settings.executor.group_id, 4
        )
        # After the commits: a result can be read before the ingest has run its delivery
        # report (which frees its bytes), never after its offset is committed.
        [status] = executor.status()
    finally:
        executor.drain(15)
        collector.close()
    peak_bytes = status["peak_in_flight_bytes"]
    print(
        f"\n{n} requests of {max(sizes) / MIB:.2f} MiB, budget {budget / MIB:.0f} MiB: peak held "
        f"{peak_bytes / MIB:.2f} MiB, peak {peak_records} records in flight, ingest RSS peak "
        f"{peak_rss / MIB:.0f} MiB, Ray memory reserved {reservation_seen / MIB:.0f} MiB "
        f"(ingest {reserved / MIB:.0f} MiB), all answered {took:.1f} s after the start"
    )
    assert status["max_in_flight_bytes"] == budget
    assert peak_bytes <= budget + max(sizes), "within the budget, give or take one record"
    assert peak_bytes > budget // 2, "the byte budget is what bound the window"
    assert peak_records < settings.executor.max_in_flight, "the record budget never bound it"
    assert paused_seen
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
    assert committed == ends
    assert status["in_flight_bytes"] == 0
    assert reservation_seen >= reserved, "the ingest actor's memory is reserved in Ray"


def test_a_deleted_result_topic_is_retried_with_backoff_until_it_is_back(
    settings: Settings, ray_runtime: str
) -> None:
    """The result topic is deleted (auto-create is off on the test broker) while requests
    arrive: their results wait, nothing is committed past them, the status names the failing
    topic; once the topic is created again every result arrives, each once, and the offsets
    commit to the end. librdkafka gives up on a missing topic after
    ``topic.metadata.propagation.max.ms`` (30 s by default; 5 s here, to keep the test short)."""
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"extra": {"topic.metadata.propagation.max.ms": "5000"}}
            )
        }
    )
    settings = slow_pipeline_settings(
        settings, write_retry_max_s=2.0, write_failure_log_interval_s=5.0
    )
    executor = Executor(settings)
    executor.start()
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        warm = _burst(settings, 20)
        collector = ResultCollector(settings)
        collector.wait_for(warm, timeout_s=60)
        collector.close()
        for future in admin.delete_topics([settings.topics.output]).values():
            future.result(30)
        ids = _burst(settings, 200)
        # librdkafka fails the waiting writes once the topic is known to be gone.
        deadline = time.monotonic() + 60
        failing: list[dict[str, object]] = []
        while not failing and time.monotonic() < deadline:
            failing = [f for s in executor.status() for f in s["failing_topics"]]
            time.sleep(0.2)
        assert [f["topic"] for f in failing] == [settings.topics.output]
        print(f"\nfailing: {failing[0]}")
        failed_at_start = sum(s["failed_deliveries"] for s in executor.status())
        # A 10 s outage from here: the loop keeps running, nothing past the waiting results is
        # committed, the topic is probed with backoff (at most 2 s apart), not hammered.
        time.sleep(10)
        statuses = executor.status()
        retried = sum(s["failed_deliveries"] for s in statuses) - failed_at_start
        uncommitted, _ = _lag(settings)
        assert uncommitted >= len(ids)
        assert [f["topic"] for s in statuses for f in s["failing_topics"]] == [
            settings.topics.output
        ]
        assert retried <= 10 / 1.0 + 2, "one probe per backoff step, not one try per result"
        outage_started = time.monotonic()
        create_topics(settings.kafka, settings.topics)  # the result topic is back
        collector = ResultCollector(settings)
        results = collector.wait_for(ids, timeout_s=90)
        recovered_s = time.monotonic() - outage_started
        collector.close()
        committed, ends = committed_equals_end(
            settings, settings.topics.input, settings.executor.group_id, 4
        )
        after = executor.status()
    finally:
        executor.drain(15)
    print(
        f"failed deliveries in the 10 s outage: {retried}; {len(results)} results arrived "
        f"{recovered_s:.1f} s after the topic came back"
    )
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
    assert committed == ends
    assert all(s["failing_topics"] == [] for s in after)
