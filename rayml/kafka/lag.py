"""How far behind a consumer group is, read from Kafka alone.

:func:`group_lag` asks the broker (committed offsets of the executor's group against the input
topics' end offsets), so it is true even when no executor runs: ``rayml status`` and the pool
autoscaler read it. :func:`partition_lags` is the ingest's own view of its assigned partitions,
from its consumer's cached high watermarks, without a broker round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from rayml.config import Settings
from rayml.errors import KafkaAdminError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP, partition_name

logger = logging.getLogger(__name__)


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
    """Per-partition lag of the executor's consumer group on its input topics (every tenant's
    inference topics, both lanes; without tenants, ``topics.input`` and ``topics.input_batch``).

    Raises:
        KafkaAdminError: if the broker cannot be reached or an input topic does not exist.
    """
    topics = [topic for t in settings.tenants for topic in (t.input_topic, t.bulk_topic)] or [
        settings.topics.input,
        settings.topics.input_batch,
    ]
    # A throwaway consumer that never subscribes: it only reads offsets, it joins no group.
    consumer = kafka_clients.consumer(settings.kafka, settings.executor.group_id)
    try:
        parts = []
        missing = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=timeout_s)
            info = meta.topics.get(topic)
            if info is None or info.error is not None:
                missing.append(f"{topic!r}" + (f" ({info.error})" if info is not None else ""))
                continue
            parts += [TopicPartition(topic, p) for p in sorted(info.partitions)]
        if missing and not parts:
            raise KafkaAdminError(
                f"input topics {', '.join(missing)} are not available on "
                f"{settings.kafka.bootstrap_servers}"
            )
        if missing:
            # One tenant's bulk topic not made yet (`rayml tenants apply` makes it): the lag of
            # the others is still worth having, for the autoscaler and `rayml status`.
            logger.warning("lag: input topics not available (left out): %s", ", ".join(missing))
        committed = consumer.committed(parts, timeout=timeout_s)
        lags = []
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout_s
            )
            lags.append(
                PartitionLag(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None, high)
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


def partition_lags(
    consumer: Consumer, assigned: Iterable[TP], pending: Callable[[TP], int]
) -> dict[str, int]:
    """Records behind per assigned partition (``topic[p]``): not yet polled (cached high
    watermark - position) plus ``pending(tp)``, polled and not finished.

    Must run on the thread that owns ``consumer``; asks the broker nothing.
    """
    parts = sorted(assigned)
    if not parts:
        return {}
    out: dict[str, int] = {}
    for tp in consumer.position([TopicPartition(t, p) for t, p in parts]):
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high is None or high < 0 or tp.offset < 0:
            continue  # nothing fetched yet: no figure rather than a wrong one
        key = (tp.topic, tp.partition)
        out[partition_name(key)] = max(0, high - tp.offset) + pending(key)
    return out
