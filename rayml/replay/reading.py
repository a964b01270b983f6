"""Reading bounded stretches of partitions, as the replays and the diff do.

A replay reads from a start offset to a stop offset fixed when it begins (a :class:`Span` per
partition), so what is written meanwhile -- including its own copies, when it writes to the
topic it reads -- is not read by the same run. Records are read ``read_committed``: a record
of an aborted transaction (an executor's exactly-once writes, a crashed ``replay dlq``) is
never replayed or compared. A partition is done once a record at or past its stop is seen,
its position reaches the stop (transaction markers and compaction leave gaps), or the broker
says its end is reached (``PARTITION_EOF``: with ``read_committed`` that end is the last stable
offset, so an open transaction never holds a run for ever). A read that makes no progress for
``stall_s`` fails, naming the partitions and how far each got.

The consumers here are assigned their partitions (no subscription): the group id only names
the reader, and only ``replay dlq`` commits offsets under it (in its transactions).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from rayml.client.kafka import partitions_of
from rayml.config import KafkaSettings
from rayml.kafka import clients as kafka_clients
from rayml.protocol.envelopes import decode_result
from rayml.replay.diff import ResultSet
from rayml.replay.errors import ReadStalledError, ReplayError

logger = logging.getLogger(__name__)

__all__ = [
    "Span",
    "read_results",
    "read_spans",
    "reader",
    "spans_between",
    "watermarks",
]


@dataclass(frozen=True)
class Span:
    """Offsets ``[start, stop)`` of one partition, to read."""

    topic: str
    partition: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """How many offsets the span covers (records, or fewer with gaps)."""
        return max(0, self.stop - self.start)

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


def reader(kafka: KafkaSettings, group: str, **overrides: Any) -> Consumer:
    """A consumer for :func:`read_spans`: ``read_committed``, end-of-partition events on."""
    return kafka_clients.consumer(
        kafka,
        group,
        **{"enable.partition.eof": True, "isolation.level": "read_committed", **overrides},
    )


def watermarks(
    consumer: Consumer, topic: str, timeout_s: float, kafka: KafkaSettings | None = None
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` of ``topic``; raises if the topic does not exist."""
    partitions = partitions_of(consumer, topic, timeout_s, kafka)
    if not partitions:
        raise ReplayError(f"topic {topic!r} does not exist")
    marks: dict[int, tuple[int, int]] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        marks[p] = (low, high)
    return marks


def spans_between(
    consumer: Consumer,
    topic: str,
    start_ms: int,
    stop_ms: int,
    timeout_s: float,
    kafka: KafkaSettings | None = None,
) -> list[Span]:
    """The offsets of ``topic`` whose records fall in ``[start_ms, stop_ms)``, per partition.

    Each partition's span runs from the first offset with a timestamp at or after ``start_ms``
    to the first at or after ``stop_ms`` (the broker's time index: ``offsets_for_times``), or
    to the partition's end now if there is none.
    """
    marks = watermarks(consumer, topic, timeout_s, kafka)

    def first_at(ms: int) -> dict[int, int]:
        asked = [TopicPartition(topic, p, ms) for p in marks]
        found = consumer.offsets_for_times(asked, timeout=timeout_s)
        # -1: no record that late; the span runs to the end.
        return {
            tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found
        }

    starts, stops = first_at(start_ms), first_at(stop_ms)
    return [
        Span(topic, p, max(starts[p], low), min(stops[p], high))
        for p, (low, high) in sorted(marks.items())
    ]


def read_spans(
    consumer: Consumer,
    spans: list[Span],
    *,
    chunk: int = 500,
    stall_s: float = 30.0,
    poll_s: float = 0.5,
) -> Iterator[list[Message]]:
    """The records of ``spans``, in lists of at most ``chunk`` (each partition in order).

    Raises:
        ReadStalledError: No progress for ``stall_s`` while some span is unfinished.
        ReplayError: The consumer met a fatal error.
    """
    todo = {(s.topic, s.partition): s for s in spans if s.size > 0}
    if not todo:
        return
    consumer.assign([TopicPartition(t, p, s.start) for (t, p), s in todo.items()])
    position = {key: s.start for key, s in todo.items()}
    progress_at = time.monotonic()
    while todo:
        out: list[Message] = []
        for msg in consumer.consume(chunk, timeout=poll_s):
            key = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if todo.pop(key, None) is not None:  # type: ignore[arg-type]
                        progress_at = time.monotonic()
                elif err.fatal():
                    raise ReplayError(f"reading {key[0]}[{key[1]}] failed: {err.str()}")
                else:
                    logger.warning("reading %s[%s]: %s", key[0], key[1], err.str())
                continue
            span = todo.get(key)  # type: ignore[arg-type]
            offset: int = msg.offset()  # type: ignore[assignment]
            if span is None:
                continue  # its span is done: a record read past the stop
            if offset >= span.stop:
                del todo[key]  # type: ignore[arg-type]
                continue
            position[key] = offset + 1  # type: ignore[index]
            out.append(msg)
            if offset + 1 >= span.stop:
                del todo[key]  # type: ignore[arg-type]
        if out:
            yield out
            progress_at = time.monotonic()  # the caller's time with the chunk is no stall
        if todo:
            for tp in consumer.position([TopicPartition(t, p) for t, p in todo]):
                key = (tp.topic, tp.partition)
                if tp.offset >= 0 and tp.offset > position[key]:
                    position[key] = tp.offset
                    progress_at = time.monotonic()
                if tp.offset >= todo[key].stop:
                    del todo[key]
        if todo and time.monotonic() - progress_at > stall_s:
            raise ReadStalledError(
                {f"{t}[{p}]": (position[(t, p)], s.stop) for (t, p), s in todo.items()}, stall_s
            )


def read_results(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> ResultSet:
    """Every result on ``topic`` now, from its beginning (the last one per request id).

    Raises:
        ReplayError: The topic does not exist, or could not be read to its end.
    """
    found = ResultSet()
    consumer = reader(kafka, f"rayml-replay-diff-{uuid.uuid4().hex[:12]}")
    try:
        marks = watermarks(consumer, topic, timeout_s, kafka)
        spans = [Span(topic, p, low, high) for p, (low, high) in sorted(marks.items())]
        for chunk in read_spans(consumer, spans, chunk=5_000, stall_s=timeout_s):
            for msg in chunk:
                try:
                    found.add(decode_result(msg.value() or b""))
                except ValidationError:
                    found.add(None)
    finally:
        consumer.close()
    return found
