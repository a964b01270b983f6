"""The client's Kafka plumbing: reachability, reply topics, and reading compacted topics.

Kept apart from :mod:`rayml.client.client` so that the client's own logic reads as the request flow,
and so that these few broker calls, each with a bounded timeout and a clear error, are in one
place.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from rayml.client.errors import BrokerUnreachableError, DeliveryFailedError
from rayml.config import KafkaSettings
from rayml.errors import KafkaAdminError, RaymlError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.auth_errors import AuthenticationFailedError, ErrorLog, connect, refusal

logger = logging.getLogger(__name__)

__all__ = [
    "available",
    "check_reachable",
    "create_reply_topic",
    "delete_topic",
    "delivery_failure",
    "end_offsets",
    "partitions_of",
    "read_to_end",
]


def available(consumer: Any, max_messages: int, timeout_s: float) -> list[Any]:
    """Messages ready now, waiting at most ``timeout_s`` for the first one.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` messages *or* the timeout passes,
    so a lone reply would sit out the whole timeout. Waiting for one message and then taking
    whatever else is already fetched answers as soon as anything arrives.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


def check_reachable(
    admin: Any,
    kafka: KafkaSettings,
    timeout_s: float,
    errors: ErrorLog | list[KafkaError] | None = None,
) -> None:
    """Ask the cluster for its metadata; fail fast if no bootstrap server answers or the broker
    refuses the client's credentials.

    Args:
        errors: What the admin client's ``error_cb`` collects (an ``ErrorLog``, or the list
            it appends to): librdkafka reports a refused handshake only there (the metadata
            call itself only says "transport failure"), so with it a wrong password fails as
            soon as the broker says so, not after ``timeout_s``.

    Raises:
        BrokerUnreachableError: Nothing answered within ``timeout_s``, or the broker refused the
            credentials (its reason names the authentication failure and the principal; its
            ``__cause__`` is the :class:`~rayml.kafka.auth_errors.AuthenticationFailedError`).
    """
    try:
        log = errors if isinstance(errors, ErrorLog) else ErrorLog(errors)
        connect(admin, kafka, log, timeout_s)
    except AuthenticationFailedError as exc:
        raise BrokerUnreachableError(kafka.bootstrap_servers, timeout_s, str(exc)) from exc
    except KafkaAdminError as exc:
        cause = exc.__cause__
        err = cause.args[0] if isinstance(cause, KafkaException) and cause.args else cause
        reason = err.str() if isinstance(err, KafkaError) else str(err or exc)
        raise BrokerUnreachableError(kafka.bootstrap_servers, timeout_s, reason) from exc


def delivery_failure(
    request_id: str, topic: str, err: KafkaError, kafka: KafkaSettings
) -> DeliveryFailedError:
    """The error of a request the broker did not take; a refusal names the principal.

    An ACL's refusal (``TOPIC_AUTHORIZATION_FAILED``) becomes a reason that says which principal
    may not write which topic, with the :class:`~rayml.kafka.auth_errors.KafkaAccessError` as
    the error's ``__cause__``.
    """
    refused = refusal(err, kafka, "Write", f"topic {topic!r}")
    failure = DeliveryFailedError(request_id, topic, str(refused) if refused else err.str())
    failure.__cause__ = refused
    return failure


def partitions_of(
    admin_or_client: Any, topic: str, timeout_s: float, kafka: KafkaSettings | None = None
) -> list[int]:
    """The partition ids of ``topic``, or ``[]`` if it does not exist (yet).

    Raises:
        AuthorizationFailedError: No ACL lets this client's principal (named from ``kafka``)
            describe the topic: Kafka does not say whether it exists, and reading it as empty
            would hide the refusal.
    """
    meta = admin_or_client.list_topics(topic, timeout=timeout_s)
    topic_meta = meta.topics.get(topic)
    if topic_meta is None:
        return []
    if topic_meta.error is not None:
        if kafka is not None:
            refused = refusal(topic_meta.error, kafka, "Describe", f"topic {topic!r}")
            if refused is not None:
                raise refused
        return []
    return sorted(topic_meta.partitions)


def create_reply_topic(
    admin: Any,
    topic: str,
    *,
    retention_ms: int,
    replication_factor: int | None,
    timeout_s: float,
    kafka: KafkaSettings | None = None,
) -> bool:
    """Create a one-partition reply topic with short retention; True if it was created.

    One partition is enough: one consumer reads it, and the executor keys results by request id
    only to let readers deduplicate, not for ordering. Short retention because a result nobody
    read within the hour is a result nobody waits for. ``replication_factor`` ``None``: the
    broker's default.

    Raises:
        AuthorizationFailedError: No ACL lets the principal (named from ``kafka``) create the
            topic; a tenant's clients create theirs under its reply prefix.
        KafkaAdminError: The broker refused (other than "it already exists") or did not answer.
    """
    new = NewTopic(
        topic,
        num_partitions=1,
        replication_factor=replication_factor or -1,
        config={"retention.ms": str(retention_ms), "cleanup.policy": "delete"},
    )
    future = admin.create_topics([new], request_timeout=timeout_s)[topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        hint = (
            "a tenant's clients name their reply topic under its reply prefix "
            "(Client(reply_topic=...))"
        )
        refused = refusal(exc, kafka, "Create", f"reply topic {topic!r}", hint) if kafka else None
        if refused is not None:
            raise refused from exc
        raise KafkaAdminError(f"cannot create reply topic {topic!r}: {exc}") from exc
    # The controller has the topic; wait until metadata shows it, so the consumer can be
    # assigned before any request goes out.
    deadline = time.monotonic() + timeout_s
    while not partitions_of(admin, topic, timeout_s):
        if time.monotonic() > deadline:
            raise KafkaAdminError(f"reply topic {topic!r} was created but never became visible")
        time.sleep(0.05)
    return True


def delete_topic(admin: Any, topic: str, timeout_s: float) -> None:
    """Delete ``topic``; a failure is logged, not raised (closing must not fail)."""
    try:
        admin.delete_topics([topic], request_timeout=timeout_s)[topic].result(timeout=timeout_s)
    except KafkaException as exc:
        logger.warning("could not delete reply topic %s: %s", topic, exc)


# A partition without a leader yet (a topic just created, a broker restarting): asked again.
_NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def end_offsets(consumer: Any, topic: str, partitions: list[int], timeout_s: float) -> list[int]:
    """The high watermark of each partition (the offset the next record will get).

    A partition whose leader is not known yet (right after the topic was created) is asked
    again until ``timeout_s`` has passed; then its error is raised.
    """
    deadline = time.monotonic() + timeout_s
    ends = []
    for p in partitions:
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                ends.append(
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=left)[1]
                )
                break
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                code = err.code() if isinstance(err, KafkaError) else None
                if code not in _NO_LEADER_YET or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    return ends


def read_to_end(kafka: KafkaSettings, topic: str, timeout_s: float) -> dict[bytes, bytes | None]:
    """Read a (compacted) topic from its beginning to its current end; the last value per key.

    A tombstone (``None`` value) is kept as ``None``: the key was deleted. A missing topic
    reads as empty.

    Raises:
        RaymlError: The end was not reached within ``timeout_s``.
    """
    consumer = kafka_clients.consumer(
        kafka, f"rayml-client-read-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": False}
    )
    try:
        partitions = partitions_of(consumer, topic, timeout_s, kafka)
        if not partitions:
            return {}
        ends = dict(
            zip(partitions, end_offsets(consumer, topic, partitions, timeout_s), strict=True)
        )
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
        latest: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise RaymlError(f"could not read topic {topic!r} to its end within {timeout_s:g}s")
            for msg in available(consumer, 1000, 0.1):
                if msg.error() is not None:
                    continue
                key, partition, offset = msg.key(), msg.partition(), msg.offset()
                if key is not None:
                    latest[key] = msg.value()
                if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                    todo.discard(partition)
            # Compaction may have removed the last records: a position at the end also counts.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return latest
    finally:
        consumer.close()
