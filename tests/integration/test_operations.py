"""Operations that must not lose or repeat a request: a broker restart and a rolling upgrade.

* Broker restart: the Kafka broker (its own, on a data dir of this test) is stopped mid-burst
  and started again; producers, the executor and the reader reconnect on their own.
* Rolling upgrade: two executor instances serve one consumer group; a new instance is started
  beside each and the old one drained (SIGTERM) in turn, while producers keep sending. KIP-848
  moves partitions only once their old owner has finished and committed what it had (its
  revoke callback drains them), so no request is lost *and none is answered twice*.

Each test prints a line ``| scenario | sent | answered | lost | duplicated | longest pause |``;
the longest pause is the longest time between two consecutive results at the reader.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayml.config import Settings
from rayml.localkafka import LocalBroker, free_port
from tests.support.executor_process import ExecutorProcess
from tests.support.kafka_io import committed_equals_end
from tests.support.scenarios import slow_pipeline_settings
from tests.support.traffic import SteadyProducer, Tally, TimedCollector
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _on_the_result_topic(settings: Settings) -> int:
    """How many records the result topic holds (end offsets), whatever a reader has seen."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "count-results"}
    )
    try:
        meta = probe.list_topics(settings.topics.output, timeout=10).topics[settings.topics.output]
        return sum(
            probe.get_watermark_offsets(TopicPartition(settings.topics.output, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        probe.close()


def _serving_settings(settings: Settings) -> Settings:
    # Three executors at once (during an upgrade) fit the session's 2 CPUs.
    return slow_pipeline_settings(settings, worker_num_cpus=0.25)


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test alone (the session's broker must not go down)."""
    data_dir = Path(tempfile.mkdtemp(prefix="rayml-kafka-restart-"))
    broker = LocalBroker(data_dir, port=free_port(), state_dir=REPO / ".rayml")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_broker_restart_mid_burst_loses_nothing(
    settings: Settings, own_broker: LocalBroker, ray_runtime: str
) -> None:
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": own_broker.bootstrap_servers})
    settings = _serving_settings(settings.model_copy(update={"kafka": kafka}))
    collector = TimedCollector(settings).start_background()
    producer = SteadyProducer(settings, rate=300)
    executor = ExecutorProcess(settings, ray_runtime).start()
    try:
        producer.start()
        collector.wait_count(600)
        assert own_broker.stop(), "the broker did not stop"
        down_at = len(producer.ids)
        down_since = time.monotonic()
        wait_until(
            lambda: len(producer.ids) >= down_at + 600,
            "600 requests are sent to a broker that is down",
        )
        started = time.monotonic()
        own_broker.start()
        restart_s = time.monotonic() - started
        up_at = len(producer.ids)
        collector.wait_count(up_at)
        ids = producer.stop()
        collector.wait_all(ids, timeout_s=180)
        alive = executor.proc is not None and executor.proc.poll() is None
    finally:
        producer.halt()
        executor.stop()
        collector.stop_background()
        collector.close()
    tally = Tally.of("broker restart mid-burst", ids, collector)
    print(
        f"\n{tally.line()}\nbroker down for {started - down_since + restart_s:.1f}s; "
        f"{up_at - down_at} requests sent meanwhile"
    )
    assert alive, "the executor must ride out the restart without dying"
    assert up_at > down_at
    # On failure, say which side stopped: the executor (its log) or the reader (what is there).
    assert tally.lost == 0, (
        f"{_on_the_result_topic(settings)} results on the result topic; "
        f"executor log:\n{executor.notable()}"
    )
    assert all(any(r.status == "ok" for r in collector.results[i]) for i in ids)


def test_rolling_upgrade_loses_and_repeats_nothing(settings: Settings, ray_runtime: str) -> None:
    settings = _serving_settings(settings)
    collector = TimedCollector(settings).start_background()
    producer = SteadyProducer(settings, rate=300)
    old = [ExecutorProcess(settings, ray_runtime).start() for _ in range(2)]
    new: list[ExecutorProcess] = []
    drains: list[float] = []
    try:
        producer.start()
        collector.wait_count(600)
        for previous in old:
            # Start the new version beside the old one; once it has its share of the
            # partitions, drain the old one.
            new.append(ExecutorProcess(settings, ray_runtime).start())
            new[-1].wait_for_log(r"ingest=\S+ assigned (?!nothing)")
            drains.append(previous.terminate(60))
            sent = len(producer.ids)
            collector.wait_count(sent // 2)
        # Steady load on the new executors alone for a while (2 s at the producer's rate).
        after = len(producer.ids)
        wait_until(lambda: len(producer.ids) >= after + 600, "600 more requests are sent")
        ids = producer.stop()
        collector.wait_all(ids, timeout_s=120)
        # Duplicates over the whole run: once the group has committed every request, none can
        # be answered again; then the result topic is read to its end.
        committed, ends = committed_equals_end(
            settings,
            settings.topics.input,
            settings.executor.group_id,
            settings.topics.input_partitions,
            timeout_s=60,
        )
        collector.stop_background()
        collector.poll_until_quiet(2.0)
    finally:
        producer.halt()
        for proc in [*old, *new]:
            proc.stop()
        collector.stop_background()
        collector.close()
    tally = Tally.of("rolling upgrade of 2 executors", ids, collector)
    print(f"\n{tally.line()}\ndrains took {', '.join(f'{d:.1f}s' for d in drains)}")
    assert all(p.proc is not None and p.proc.returncode == 0 for p in old), "clean drains"
    # The ingest actors' own lines reach the executor's log (Ray forwards their stderr).
    assert any("drained in" in line for line in old[0].log), old[0].notable()
    logs = "\n".join(f"--- executor {i}\n{p.notable()}" for i, p in enumerate([*old, *new]))
    assert committed == ends, "every request committed by the end"
    assert tally.lost == 0, logs
    assert tally.duplicated == 0, logs
    assert sum(len(rs) for rs in collector.results.values()) == len(ids), "no other results"
