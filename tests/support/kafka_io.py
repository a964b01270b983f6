"""Test helpers that talk to the real broker: send requests, collect results by id."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from rayml.config import Settings
from rayml.protocol.envelopes import Result, decode_result

# librdkafka's own log lines (e.g. "Connection refused" while a test restarts the broker) go
# through logging: pytest shows them with a failing test only.
CLIENT_LOG = logging.getLogger("tests.librdkafka")


def send_requests(
    settings: Settings, requests: Iterable[dict[str, Any] | bytes], topic: str | None = None
) -> int:
    """Produce raw request envelopes (dicts are JSON-encoded; key = id when there is one)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "linger.ms": 5,
            "enable.idempotence": True,
        }
    )
    n = 0
    for req in requests:
        if isinstance(req, bytes):
            producer.produce(topic or settings.topics.input, value=req)
        else:
            key = str(req.get("id", "")).encode() or None
            producer.produce(
                topic or settings.topics.input, value=json.dumps(req).encode(), key=key
            )
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return n


def predict_request(
    request_id: str, features: list[float], pipeline: str = "breast_cancer.predict", **extra: Any
) -> dict[str, Any]:
    return {"id": request_id, "pipeline": pipeline, "params": {"features": features}, **extra}


class ResultCollector:
    """Reads a result topic from the beginning and keeps every result by id (with duplicates)."""

    def __init__(
        self, settings: Settings, topic: str | None = None, isolation_level: str | None = None
    ) -> None:
        """``isolation_level``: "read_committed" (librdkafka's default: aborted transactional
        records and open transactions' records are not read) or "read_uncommitted" (all)."""
        self.topic = topic or settings.topics.output
        conf: dict[str, Any] = {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": f"collector-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        if isolation_level is not None:
            conf["isolation.level"] = isolation_level
        self.consumer = Consumer(conf)
        self.consumer.subscribe([self.topic])
        self.results: dict[str, list[Result]] = {}

    def poll(self, timeout_s: float = 0.2) -> int:
        got = 0
        for msg in self.consumer.consume(5000, timeout=timeout_s):
            if msg.error() is not None:
                continue
            result = decode_result(msg.value())
            assert msg.key() == result.id.encode(), "results are keyed by request id"
            self.results.setdefault(result.id, []).append(result)
            got += 1
        return got

    def poll_until_quiet(self, quiet_s: float = 1.0) -> int:
        """Read until nothing new arrives for ``quiet_s``; returns the results read."""
        total = 0
        while (got := self.poll(quiet_s)) > 0:
            total += got
        return total

    def wait_for(self, ids: Iterable[str], timeout_s: float = 120.0) -> dict[str, list[Result]]:
        wanted = set(ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not wanted <= self.results.keys():
            self.poll()
        missing = wanted - self.results.keys()
        assert not missing, f"{len(missing)} requests got no result, e.g. {sorted(missing)[:5]}"
        return {i: self.results[i] for i in wanted}

    def close(self) -> None:
        self.consumer.close()


def committed_equals_end(
    settings: Settings, topic: str, group: str, partitions: int, timeout_s: float = 30.0
) -> tuple[dict[int, int], dict[int, int]]:
    """Wait until the group's committed offsets reach the partitions' end offsets."""
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "logger": CLIENT_LOG,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            committed = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
            ends = {
                p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)
            }
            if all(committed[p] == ends[p] for p in ends) or time.monotonic() > deadline:
                return committed, ends
            time.sleep(0.5)
    finally:
        probe.close()
