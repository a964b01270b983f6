"""The client's reply thread: reads its reply topic and completes futures by request id.

See :mod:`rayml.client.client` for why each client has a reply topic. This module holds the moving
part: one consumer assigned to the reply topic (no consumer group: nothing to rebalance, no
offsets to commit -- a client that restarts is a new client with new requests), and one
daemon thread that reads it and also serves the producer's delivery reports.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from rayml.client.futures import PendingReplies
from rayml.client.kafka import (
    available,
    create_reply_topic,
    delete_topic,
    delivery_failure,
    end_offsets,
    partitions_of,
)
from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.protocol.envelopes import decode_result

logger = logging.getLogger(__name__)

__all__ = ["REPLY_RETENTION_MS", "ClientResources", "ReplyReader", "release"]

#: Retention of a client's own reply topic: a result unread for an hour has nobody waiting.
REPLY_RETENTION_MS = 3600 * 1000


class ReplyReader:
    """Creates (if needed) and reads one reply topic; completes ``pending`` by request id.

    The consumer is assigned before the constructor returns, so every result of every request
    sent afterwards is seen: an own topic is read from its beginning (all of it is ours), a
    shared one from its current end (what was there before belongs to others).

    Args:
        settings: Kafka settings and the replication factor for the topic.
        topic: The reply topic.
        admin: An AdminClient to create the topic with.
        producer: The client's producer, whose delivery reports this thread serves.
        pending: The futures to complete.
        own_topic: Whether the topic belongs to this client alone.
        client_id: For thread and Kafka client names.
        timeout_s: Bound on each admin or metadata call.

    Raises:
        KafkaAdminError: The topic cannot be created.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        admin: Any,
        producer: Any,
        pending: PendingReplies,
        own_topic: bool,
        client_id: str,
        timeout_s: float,
    ) -> None:
        self.topic = topic
        self._pending = pending
        self._producer = producer
        self._kafka = settings.kafka
        create_reply_topic(
            admin,
            topic,
            retention_ms=REPLY_RETENTION_MS,
            replication_factor=settings.topics.replication_factor,
            timeout_s=timeout_s,
            kafka=settings.kafka,
        )
        self._consumer = kafka_clients.consumer(
            settings.kafka,
            f"rayml-client-{client_id}",
            # Replies are small and latency matters more than fetch efficiency.
            **{"client.id": f"rayml-client-{client_id}-replies", "fetch.wait.max.ms": 10},
        )
        partitions = partitions_of(self._consumer, topic, timeout_s, settings.kafka)
        if own_topic:
            starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        else:
            ends = end_offsets(self._consumer, topic, partitions, timeout_s)
            starts = [TopicPartition(topic, p, e) for p, e in zip(partitions, ends, strict=True)]
        self._consumer.assign(starts)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"rayml-replies-{client_id}", daemon=True
        )
        self._thread.start()

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        """Delivery report of one request: fail its future if the broker did not take it."""
        if err is None:
            return
        request_id = (msg.key() or b"").decode(errors="replace")
        topic = msg.topic() or "?"
        self._pending.fail(request_id, delivery_failure(request_id, topic, err, self._kafka))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = available(self._consumer, 1000, 0.05)
            except KafkaException as exc:
                logger.warning("reply topic %s: consumer error: %s", self.topic, exc)
                time.sleep(0.1)
                continue
            for msg in messages:
                if msg.error() is not None:
                    logger.debug("reply topic %s: %s", self.topic, msg.error())
                    continue
                try:
                    result = decode_result(msg.value() or b"")
                except ValueError:
                    logger.warning(
                        "reply topic %s offset %d: not a result envelope, skipped",
                        self.topic,
                        msg.offset(),
                    )
                    continue
                self._pending.complete(result)
            # Delivery reports of the client's requests run here, on this thread.
            self._producer.poll(0)

    def stop(self, timeout_s: float) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._consumer.close()


@dataclass
class ClientResources:
    """What a client holds that must be given back, apart from the client object itself.

    :func:`release` gives it back. The client calls it from ``close()``, and registers it with
    ``weakref.finalize`` too, so that a client dropped without ``close()`` -- a notebook cell run
    twice, a script that forgot -- still deletes its reply topic when it is garbage-collected or
    the interpreter exits. Nothing here refers back to the client, or it would never be collected.
    """

    admin: Any
    producer: Any
    pending: PendingReplies
    reply_topic: str
    owns_reply_topic: bool
    replies: ReplyReader | None = None
    timeout_s: float = 5.0


def release(resources: ClientResources) -> None:
    """Flush the producer, fail unanswered futures, stop the reply thread, delete an own topic."""
    # Requests already handed to the producer still reach the executor (their results will
    # simply not be read), so that "sent" means sent.
    resources.producer.flush(resources.timeout_s)
    abandoned = resources.pending.close()
    if abandoned:
        logger.info(
            "reply topic %s: client closed with %d requests unanswered",
            resources.reply_topic,
            abandoned,
        )
    replies, resources.replies = resources.replies, None
    if replies is not None:
        replies.stop(resources.timeout_s)
        if resources.owns_reply_topic:
            delete_topic(resources.admin, resources.reply_topic, resources.timeout_s)
