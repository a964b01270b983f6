"""The side topic a range replay writes its results to, and what a replay's producers need.

A side topic (``replay range --to-topic``) is created the way a client's shared reply topic is
(:func:`rayml.client.kafka.create_reply_topic`: one partition, ``topics.replication_factor`` or
the broker's default), with an output topic's retention (7 days) instead of an hour: results of
a backfill are read and compared later.
"""

from __future__ import annotations

import uuid
from typing import Final

from rayml.client.kafka import create_reply_topic, partitions_of
from rayml.config import Settings
from rayml.kafka import clients as kafka_clients

__all__ = ["SIDE_TOPIC_RETENTION_MS", "ensure_side_topic", "room_for"]

SIDE_TOPIC_RETENTION_MS: Final = 7 * 24 * 3600 * 1000


def room_for(settings: Settings) -> dict[str, int]:
    """The producer setting a replay needs to write back any request the executor accepts,
    with its headers (``message.max.bytes``: librdkafka's default, 1,000,000, is below
    ``executor.max_request_bytes``' default)."""
    return {"message.max.bytes": max(1_000_000, settings.executor.max_request_bytes + 65_536)}


def ensure_side_topic(settings: Settings, topic: str, timeout_s: float) -> bool:
    """Create ``topic`` if it does not exist (see the module doc); True if this call made it.

    Raises:
        AuthorizationFailedError: The principal may not describe or create it.
        KafkaAdminError: The broker is away or refused for another reason.
    """
    admin = kafka_clients.admin_client(
        settings.kafka, **{"client.id": f"rayml-replay-{uuid.uuid4().hex[:8]}"}
    )
    if partitions_of(admin, topic, timeout_s, settings.kafka):
        return False
    return create_reply_topic(
        admin,
        topic,
        retention_ms=SIDE_TOPIC_RETENTION_MS,
        replication_factor=settings.topics.replication_factor,
        timeout_s=timeout_s,
        kafka=settings.kafka,
    )
