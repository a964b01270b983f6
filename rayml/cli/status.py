"""What ``rayml status`` reports: consumer lag from Kafka, live figures from the executors.

Lag comes from the broker alone (committed offsets of the executor's group against the end
offsets of the input topic), so it is true even when no executor runs — which is exactly when
it matters. In-flight work, pool sizes, throughput and loaded models come from the executors'
ingest actors, found by name on the Ray cluster.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import TopicPartition

from rayml.config import Settings
from rayml.errors import KafkaAdminError
from rayml.kafka import clients as kafka_clients

logger = logging.getLogger(__name__)

# Ingest actors are named "<INGEST_ACTOR_PREFIX><executor instance>-i<n>" in the Ray namespace.
INGEST_ACTOR_PREFIX = "rayml-ingest:"


@dataclass(frozen=True)
class PartitionLag:
    """One input partition: the group's committed offset, the end offset, and the lag."""

    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag}


def group_lag(settings: Settings, timeout_s: float = 10.0) -> list[PartitionLag]:
    """Per-partition lag of the executor's consumer group on the input topic.

    Raises:
        KafkaAdminError: if the broker cannot be reached or the topic does not exist.
    """
    topic = settings.topics.input
    # A throwaway consumer that never subscribes: it only reads offsets, it joins no group.
    consumer = kafka_clients.consumer(settings.kafka, settings.executor.group_id)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaAdminError(
                f"input topic {topic!r} is not available on {settings.kafka.bootstrap_servers}"
                + (f": {info.error}" if info is not None else "")
            )
        parts = [TopicPartition(topic, p) for p in sorted(info.partitions)]
        committed = consumer.committed(parts, timeout=timeout_s)
        lags = []
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout_s
            )
            lags.append(
                PartitionLag(topic, tp.partition, tp.offset if tp.offset >= 0 else None, high)
            )
        return lags
    except KafkaAdminError:
        raise
    except Exception as exc:  # KafkaException: broker unreachable, timeouts
        raise KafkaAdminError(
            f"cannot read offsets from {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        consumer.close()


def executor_status(
    ray_address: str | None, namespace: str, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Status of every ingest actor on the Ray cluster at ``ray_address``.

    Connects as a short-lived driver; returns [] when no executor runs there.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=ray_address or "auto",
            namespace=namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    try:
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(INGEST_ACTOR_PREFIX) and a["namespace"] == namespace
        ]
        handles = [ray.get_actor(name, namespace=namespace) for name in sorted(names)]
        statuses: list[dict[str, Any]] = ray.get(
            [h.status.remote() for h in handles], timeout=timeout_s
        )
        return statuses
    finally:
        if started_here:
            ray.shutdown()


def summarize(lags: list[PartitionLag], ingests: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON-ready summary: lag per partition and in total, and executor figures."""
    answered = sum(s.get("results_ok", 0) + s.get("results_error", 0) for s in ingests)
    uptime = max((s.get("uptime_s", 0.0) for s in ingests), default=0.0)
    models = sorted({m for s in ingests for w in s.get("workers", []) for m in w.get("models", [])})
    return {
        "lag": {"total": sum(p.lag for p in lags), "partitions": [p.as_dict() for p in lags]},
        "executors": {
            "ingest_actors": len(ingests),
            "in_flight": sum(s.get("in_flight", 0) for s in ingests),
            "pool_size": sum(s.get("pool_size", 0) for s in ingests),
            "workers_starting": sum(s.get("workers_starting", 0) for s in ingests),
            # Ingests that left the group because their pool has no serving worker.
            "out_of_group": sum(1 for s in ingests if not s.get("in_group", True)),
            "answered": answered,
            "avg_throughput_per_s": round(answered / uptime, 1) if uptime else 0.0,
            "dead_letters": sum(s.get("dead_letters", 0) for s in ingests),
            "paused": any(s.get("paused", False) for s in ingests),
            "models_loaded": models,
        },
        "ingests": ingests,
    }
