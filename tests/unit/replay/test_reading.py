"""Reading bounded spans of partitions: where a read stops, and when it gives up (no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from rayml.replay.errors import ReadStalledError
from rayml.replay.reading import Span, read_spans


class Msg:
    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error


class FakeConsumer:
    """Serves the records of each partition in order, ``per_call`` at a time; the position of
    a partition passes the markers (offsets without records) up to ``ends[p]`` once its last
    record is served, and an end event follows when ``eof`` says so."""

    def __init__(self, records: dict[int, list[int]], ends: dict[int, int], eof: bool) -> None:
        self.records, self.ends, self.eof = records, ends, eof
        self.queue: list[Msg] = []
        self.positions: dict[int, int] = {}
        self.assigned: list[tuple[int, int]] = []

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in tps]
        for p, start in self.assigned:
            self.positions[p] = start
            self.queue += [Msg(p, o) for o in self.records.get(p, []) if o >= start]
            if self.eof:
                self.queue.append(Msg(p, -1, KafkaError(KafkaError._PARTITION_EOF)))

    def consume(self, n: int, timeout: float) -> list[Msg]:
        served, self.queue = self.queue[:n], self.queue[n:]
        for msg in served:
            if msg.error() is None:
                self.positions[msg.partition()] = msg.offset() + 1
            if not any(m.partition() == msg.partition() for m in self.queue):
                self.positions[msg.partition()] = self.ends[msg.partition()]
        return served

    def position(self, tps: list[TopicPartition]) -> list[Any]:
        return [TopicPartition("t", tp.partition, self.positions[tp.partition]) for tp in tps]


def offsets(chunks: list[list[Any]]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for chunk in chunks for m in chunk]


def test_each_span_is_read_from_its_start_to_before_its_stop_in_chunks() -> None:
    consumer = FakeConsumer({0: list(range(10)), 1: list(range(5))}, {0: 10, 1: 5}, eof=False)
    spans = [Span("t", 0, 2, 6), Span("t", 1, 0, 5), Span("t", 2, 4, 4)]
    chunks = list(read_spans(consumer, spans, chunk=3, poll_s=0))  # type: ignore[arg-type]
    assert consumer.assigned == [(0, 2), (1, 0)], "an empty span is not assigned"
    assert offsets(chunks) == [
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
    ]
    assert all(len(c) <= 3 for c in chunks)


def test_a_transaction_marker_before_the_stop_ends_the_span_by_position() -> None:
    """Records at 0 and 1, the marker at 2, stop 3: done once the position is 3."""
    consumer = FakeConsumer({0: [0, 1]}, {0: 3}, eof=False)
    chunks = list(read_spans(consumer, [Span("t", 0, 0, 3)], poll_s=0, stall_s=5))  # type: ignore[arg-type]
    assert offsets(chunks) == [(0, 0), (0, 1)]


def test_the_end_event_ends_a_span_an_open_transaction_holds_back() -> None:
    """read_committed stops at the last stable offset: the end event comes before the stop."""
    consumer = FakeConsumer({0: [0]}, {0: 1}, eof=True)
    chunks = list(read_spans(consumer, [Span("t", 0, 0, 5)], poll_s=0, stall_s=5))  # type: ignore[arg-type]
    assert offsets(chunks) == [(0, 0)]


def test_a_read_that_makes_no_progress_fails_naming_where_it_stopped() -> None:
    consumer = FakeConsumer({0: [0]}, {0: 1}, eof=False)
    with pytest.raises(ReadStalledError, match=r"no progress for 0s reading t\[0\] at 1 of 5"):
        list(read_spans(consumer, [Span("t", 0, 0, 5)], poll_s=0, stall_s=0))  # type: ignore[arg-type]
