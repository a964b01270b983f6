"""Send one request and optionally wait for its result: what ``rayml submit`` does.

Waiting reads the result topic from its current end (every partition), so only results written
after the request was sent are read; the request's id picks ours out. That suits a command
line; applications use :class:`rayml.client.client.Client`, which has its own reply topic.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import TopicPartition

from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.kafka import clients as kafka_clients
from rayml.protocol.envelopes import Request, Result, decode_result, encode_request


def submit_one(
    settings: Settings,
    request_id: str,
    pipeline: str,
    params: dict[str, Any],
    *,
    wait: bool = False,
    timeout_s: float = 60.0,
) -> Result | None:
    """Produce one request; with ``wait``, return its result (or raise on timeout)."""
    request = Request(
        id=request_id, pipeline=pipeline, params=params, sent_at_ms=int(time.time() * 1000)
    )
    consumer = None
    if wait:
        consumer = kafka_clients.consumer(settings.kafka, f"rayml-submit-{request_id}")
        meta = consumer.list_topics(settings.topics.output, timeout=10)
        topic_meta = meta.topics.get(settings.topics.output)
        if topic_meta is None or topic_meta.error is not None:
            raise RaymlError(f"result topic {settings.topics.output!r} is not available")
        # Start at each partition's current end, read *before* the request goes out, so its
        # result cannot be missed however fast it comes back.
        starts = []
        for p in topic_meta.partitions:
            tp = TopicPartition(settings.topics.output, p)
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            starts.append(TopicPartition(settings.topics.output, p, high))
        consumer.assign(starts)
    producer = kafka_clients.producer(settings.kafka)
    producer.produce(settings.topics.input, key=request_id.encode(), value=encode_request(request))
    if producer.flush(timeout_s) != 0:
        raise RaymlError(
            f"could not deliver the request to {settings.kafka.bootstrap_servers} "
            f"within {timeout_s:.0f}s"
        )
    if consumer is None:
        return None
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error() is None and msg.key() == request_id.encode():
                    return decode_result(msg.value() or b"")
        raise RaymlError(f"no result for request {request_id!r} within {timeout_s:.0f}s")
    finally:
        consumer.close()
