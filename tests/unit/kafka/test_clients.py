"""Pure helpers of rayml.kafka.clients (no broker)."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from rayml.kafka.clients import partition_names, pause_strays, set_pause_state
from tests.support.fake_records import Record


class PauseFlags:
    """A consumer's per-partition pause flags, kept across revocations as librdkafka keeps them."""

    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}


def test_a_partition_revoked_while_paused_is_resumed_when_assigned_to_a_running_member() -> None:
    consumer = PauseFlags()
    p0, p1 = TopicPartition("in", 0), TopicPartition("in", 1)
    set_pause_state(consumer, [p0, p1], paused=True)  # type: ignore[arg-type]
    # p1 is revoked while paused; the member resumes what it still has ...
    consumer.resume([p0])
    # ... and gets p1 back while running: it must read it again.
    set_pause_state(consumer, [p1], paused=False)  # type: ignore[arg-type]
    assert consumer.paused == set()
    set_pause_state(consumer, [p1], paused=True)  # type: ignore[arg-type]
    assert consumer.paused == {("in", 1)}


def test_partition_names() -> None:
    assert partition_names([TopicPartition("in", 0), TopicPartition("in", 3)]) == "in[0], in[3]"
    assert partition_names([]) == "nothing"


def test_records_read_while_paused_pause_their_partitions() -> None:
    consumer = PauseFlags()
    polled = [Record(2), Record(2), Record(5, error="partition EOF")]
    pause_strays(consumer, polled, "ingest=i-0")  # type: ignore[arg-type]
    assert consumer.paused == {("in", 2)}
    pause_strays(consumer, [], "ingest=i-0")  # type: ignore[arg-type]
    assert consumer.paused == {("in", 2)}
