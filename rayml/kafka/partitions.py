"""The one name for a Kafka partition in rayml's own code: ``TP = (topic, partition)``.

Pure (no ``confluent_kafka``), so the offset watermark, the reorder buffer, triage and the job
plan share it without loading a Kafka client. confluent-kafka's ``TopicPartition`` objects are
made only where a client call needs one.
"""

from __future__ import annotations

TP = tuple[str, int]
"""A partition as ``(topic, partition)``: hashable, cheap, and the key of every per-partition
table (offset trackers, reorder buffers, assignments)."""


def partition_name(tp: TP) -> str:
    """``topic[p]``: how logs, status and metrics name a partition.

    >>> partition_name(("ml.pipeline.input", 3))
    'ml.pipeline.input[3]'
    """
    return f"{tp[0]}[{tp[1]}]"
