"""Crashes and shutdowns mid-burst lose no request: SIGKILL, a dead worker, SIGTERM, a backlog.

Each test counts requests and results by id. Figures (duplicates, drain time, peak RSS) are
printed so that `pytest -s` shows them; the assertions carry the guarantees.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition

from rayml.config import Settings
from rayml.executor.service import Executor
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import ResultCollector, predict_request, send_requests
from tests.support.models import breast_cancer_rows
from tests.support.scenarios import slow_pipeline_settings

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]

N = 10_000


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
    collector = ResultCollector(settings)
    first = ExecutorProcess(settings, ray_runtime).start()
    try:
        ids = _burst(settings)
        seen = _wait_some(collector, N // 4)
        first.kill()
    finally:
        first.kill()
    uncommitted, _ = _lag(settings)
    print(f"\nSIGKILL after {seen} results; {uncommitted} records uncommitted at the kill")
    assert seen < N, "the kill must land mid-burst"

    second = ExecutorProcess(settings, ray_runtime).start()
    try:
        results = collector.wait_for(ids, timeout_s=180)
    finally:
        second.stop()
    duplicated = sum(len(r) - 1 for r in results.values())
    print(f"SIGKILL: sent {N}, answered {len(results)}, duplicated {duplicated}")
    assert all(any(r.status == "ok" for r in rs) for rs in results.values())
    # Only records that were in flight (not committed) at the kill may run twice.
    assert duplicated <= uncommitted
    collector.close()


def test_killing_a_worker_mid_burst_loses_nothing(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 5)
        workers = [w for s in executor.status() for w in s["workers"]]
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)  # a Ray worker process this test's executor started
        results = collector.wait_for(ids, timeout_s=180)
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
    collector = ResultCollector(settings)
    first = ExecutorProcess(settings, ray_runtime).start()
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 4)
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

    second = ExecutorProcess(settings, ray_runtime).start()
    try:
        results = collector.wait_for(ids, timeout_s=180)
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
    executor = Executor(settings)
    executor.start()
    peak_rss, peak_in_flight, paused_seen = 0, 0, False
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            for s in executor.status():
                peak_rss = max(peak_rss, psutil.Process(s["pid"]).memory_info().rss)
                peak_in_flight = max(peak_in_flight, s["in_flight"])
                paused_seen = paused_seen or s["paused"]
            time.sleep(0.5)
        done = sum(s["results_ok"] for s in executor.status())
    finally:
        executor.drain(15)
    print(
        f"\nbacklog {backlog}: peak ingest RSS {peak_rss / 2**20:.0f} MiB, "
        f"peak in flight {peak_in_flight}, {done} answered in 25 s"
    )
    assert paused_seen
    assert peak_in_flight <= ex.max_in_flight + ex.poll_max_messages
    assert peak_rss < 1024 * 2**20
    assert done > 0


def test_resizing_the_pool_mid_burst_loses_nothing(
    fault_settings: Settings, ray_runtime: str
) -> None:
    settings = fault_settings
    executor = Executor(settings)
    executor.start()
    collector = ResultCollector(settings)
    try:
        ids = _burst(settings)
        _wait_some(collector, N // 5)
        executor.resize(1)  # the newest worker drains its batches, then ends
        _wait_some(collector, N // 2)
        executor.resize(3)
        results = collector.wait_for(ids, timeout_s=180)
        status = executor.status()
    finally:
        executor.drain(15)
    assert all(len(rs) == 1 and rs[0].status == "ok" for rs in results.values())
    assert sum(s["pool_size"] for s in status) == 3
    assert sum(s["workers_replaced"] for s in status) == 0, "shrinking is a drain, not a kill"
    collector.close()
