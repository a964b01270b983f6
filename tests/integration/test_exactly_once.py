"""``executor.delivery = "exactly_once"``: each result once for read_committed readers.

Real broker, real Ray. A read_committed reader must see every request's result exactly once in a
burst (one of whose transactions aborts and is redone: a reply topic refuses its write), across
a SIGKILL of the executor mid-burst (its open transaction is aborted by the broker, its
uncommitted input re-run by the next executor), and when a zombie ingest is fenced by its
successor with the same transactional id. Figures are printed for `pytest -s`. The waits of a
test share one :class:`~tests.support.waiting.Budget`, so they never add up past its timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rayml.config import Settings
from rayml.delivery.txn_errors import ProducerFencedError
from rayml.executor.service import Executor
from rayml.protocol.envelopes import Result
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import (
    ResultCollector,
    committed_equals_end,
    predict_request,
    send_requests,
)
from tests.support.models import breast_cancer_rows
from tests.support.running_ingest import RunningIngest
from tests.support.scenarios import slow_pipeline_settings
from tests.support.waiting import Budget

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]
# The waits of one test: within pytest's 300 s, with room for the fixtures and the stops.
WAIT_BUDGET_S = 200.0


@pytest.fixture
def eos_settings(settings: Settings) -> Settings:
    return slow_pipeline_settings(
        settings,
        delivery="exactly_once",
        # A SIGKILLed executor's open transaction blocks read_committed readers until the
        # broker aborts it: keep that short in tests.
        transaction_timeout_s=5.0,
        drain_timeout_s=10.0,
    )


def _burst(settings: Settings, n: int, pipeline: str, tag: str = "") -> list[str]:
    rows = breast_cancer_rows(n)
    ids = [f"{tag}{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    send_requests(
        settings,
        (
            predict_request(rid, row.tolist(), pipeline=pipeline)
            for rid, row in zip(ids, rows, strict=True)
        ),
    )
    return ids


def _exactly_once(results: dict[str, list[Result]]) -> None:
    twice = {rid: len(rs) for rid, rs in results.items() if len(rs) != 1}
    assert not twice, f"{len(twice)} ids not seen exactly once, e.g. {list(twice.items())[:5]}"


def _count(settings: Settings, topic: str, quiet_s: float = 2.0) -> int:
    """Records a read_committed reader finds in ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"count-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    n = 0
    try:
        while got := [m for m in consumer.consume(1000, quiet_s) if m.error() is None]:
            n += len(got)
    finally:
        consumer.close()
    return n


@pytest.fixture
def executor(eos_settings: Settings, ray_runtime: str) -> Iterator[Executor]:
    executor = Executor(eos_settings)
    executor.start()
    try:
        yield executor
    finally:
        executor.drain(10)


def test_burst_each_result_once_and_offsets_committed(
    eos_settings: Settings, executor: Executor
) -> None:
    settings = eos_settings
    n = 3_000
    collector = ResultCollector(settings, isolation_level="read_committed")
    # A reply topic that refuses every record (max.message.bytes=100) fails the write of its
    # result, which aborts the transaction: the ingest rewinds mid-burst and redoes the
    # records, that one as a small result_too_large error, which the topic refuses too: one
    # more abort, and the redo answers it on the result topic. (A reply_to that does not
    # exist no longer aborts anything: the broker is asked before the write.)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    refusing = f"{settings.topics.output}.tiny"
    [created] = admin.create_topics(
        [NewTopic(refusing, 1, 1, config={"max.message.bytes": "100"})]
    ).values()
    created.result(30)
    send_requests(settings, [predict_request("e-2", [1.0] * 30, reply_to=refusing)])
    ids = _burst(settings, n, "breast_cancer.predict")
    # Dead letters and error results go through the same transactions.
    send_requests(settings, [b"not json", {"id": "e-1", "pipeline": "no.such.pipeline"}])
    results = collector.wait_for([*ids, "e-1", "e-2"], timeout_s=90)
    collector.poll_until_quiet(1.0)
    _exactly_once(collector.results)
    assert len(collector.results) == n + 2
    assert all(results[rid][0].status == "ok" for rid in ids)
    too_large = results["e-2"][0].error
    assert too_large is not None
    assert too_large.type == "result_too_large"
    assert results["e-1"][0].status == "error"
    assert _count(settings, settings.topics.dlq) == 1
    committed, ends = committed_equals_end(
        settings, settings.topics.input, settings.executor.group_id, 4
    )
    assert committed == ends
    status = executor.status()
    assert all(s["in_flight"] == 0 for s in status)
    aborts = sum(s["transaction_aborts"] for s in status)
    # The refused result, then its refused error: two aborts at most, one at least.
    assert 1 <= aborts <= 2, f"{aborts} transactions aborted for the refusing reply topic"
    print(
        f"\nexactly-once burst: {n + 2} answered, {sum(s['commits'] for s in status)} "
        f"transactions, {aborts} aborted (the refusing reply topic) and redone"
    )
    collector.close()


def test_sigkill_mid_burst_then_restart_each_result_once(
    eos_settings: Settings, ray_runtime: str
) -> None:
    settings = eos_settings
    n = 5_000
    committed_reader = ResultCollector(settings, isolation_level="read_committed")
    raw_reader = ResultCollector(settings, isolation_level="read_uncommitted")
    budget = Budget(WAIT_BUDGET_S)
    first = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        ids = _burst(settings, n, "testing.slow")
        deadline = time.monotonic() + budget.left(60)
        while len(committed_reader.results) < n // 4 and time.monotonic() < deadline:
            committed_reader.poll()
        seen = len(committed_reader.results)
        first.kill()
    finally:
        first.kill()
    assert seen < n, "the kill must land mid-burst"
    killed_at = time.monotonic()

    second = ExecutorProcess(settings, ray_runtime).start(budget.left(120))
    try:
        results = committed_reader.wait_for(ids, timeout_s=budget.left(120))
        recovered_s = time.monotonic() - killed_at
        committed_reader.poll_until_quiet(1.0)
    finally:
        second.stop()
    raw_reader.poll_until_quiet(1.0)
    raw_duplicates = sum(len(rs) - 1 for rs in raw_reader.results.values())
    raw_total = sum(len(rs) for rs in raw_reader.results.values())
    print(
        f"\nSIGKILL after {seen} committed results; all {n} answered {recovered_s:.1f}s after "
        f"the kill. Duplicates: read_committed 0 expected, "
        f"{sum(len(rs) - 1 for rs in committed_reader.results.values())} seen; "
        f"read_uncommitted (aborted records included) {raw_duplicates} "
        f"({raw_total} records in the log)"
    )
    _exactly_once(committed_reader.results)
    assert all(rs[0].status == "ok" for rs in results.values())
    committed_reader.close()
    raw_reader.close()


def test_a_zombie_ingest_is_fenced_by_its_successor(
    eos_settings: Settings, ray_runtime: str
) -> None:
    ex = eos_settings.executor.model_copy(update={"num_workers": 1})
    settings = eos_settings.model_copy(update={"executor": ex})
    collector = ResultCollector(settings, isolation_level="read_committed")
    budget = Budget(WAIT_BUDGET_S)
    zombie = RunningIngest(settings, "ingest-7")
    try:
        zombie.wait_assigned(budget.left(30))
        ids = _burst(settings, 1_000, "testing.slow", tag="a")
        collector.wait_for(ids[:10], timeout_s=budget.left(60))
        # Ray restarted "the same" ingest while the old one still runs (a partitioned node):
        # the successor's init_transactions fences the zombie's producer.
        successor = RunningIngest(settings, "ingest-7")
        try:
            ids += _burst(settings, 1_000, "testing.slow", tag="b")
            zombie.thread.join(budget.left(60))
            assert not zombie.thread.is_alive(), "the fenced ingest must stop"
            assert isinstance(zombie.error, ProducerFencedError), repr(zombie.error)
            results = collector.wait_for(ids, timeout_s=budget.left(90))
            collector.poll_until_quiet(1.0)
        finally:
            successor.ingest.stop(20)
    finally:
        zombie.ingest.stop(20)
    print(
        f"\nzombie fenced: {zombie.error!r}; {len(results)} ids, "
        f"{sum(len(rs) - 1 for rs in collector.results.values())} duplicates"
    )
    _exactly_once(collector.results)
    assert len(collector.results) == len(ids)
    collector.close()
