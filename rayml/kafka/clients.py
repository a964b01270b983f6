"""Factories for confluent-kafka clients, all built from :class:`~rayml.config.KafkaSettings`.

One place decides the settings every client shares (bootstrap servers, security, quiet
librdkafka logging through Python's ``logging``, a refused handshake logged with the principal
it refused), so a secure cluster is configured once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from rayml.config import ExecutorSettings, KafkaSettings
from rayml.kafka.auth_errors import kind_of, principal_of
from rayml.kafka.partitions import TP

_librdkafka_logger = logging.getLogger("rayml.librdkafka")
logger = logging.getLogger(__name__)


class RefusalLogger:
    """Every client's default ``error_cb``: a refused handshake (wrong password, unknown user,
    refused certificate) is logged as an error naming the principal, at most once per
    ``interval_s`` (librdkafka retries the connection every few seconds).

    librdkafka's own log line says "SASL authentication error" but not which user; an operator
    reading an executor's log needs both. A caller's own ``error_cb`` replaces this one.
    """

    def __init__(self, kafka: KafkaSettings, interval_s: float = 30.0) -> None:
        self.principal = principal_of(kafka)
        self.servers = kafka.bootstrap_servers
        self.interval_s = interval_s
        self._last: float | None = None

    def __call__(self, err: KafkaError) -> None:
        if kind_of(err) != "authentication":
            return
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            return
        self._last = now
        logger.error(
            "Kafka at %s refused %s: authentication failed: %s",
            self.servers,
            self.principal,
            err.str(),
        )


# How results are batched on their way to the broker: a few milliseconds of latency for far
# fewer, larger produce requests (each costs the broker far more than a record in it does).
RESULT_BATCHING: dict[str, Any] = {"linger.ms": 5, "compression.type": "lz4"}

# How the ingest fetches: enough per round trip to fill micro-batches, a bounded prefetch.
INGEST_FETCH: dict[str, Any] = {
    # Fetch enough to fill micro-batches without one round trip per record...
    "fetch.wait.max.ms": 5,
    "fetch.min.bytes": 65_536,
    # ...but bound librdkafka's prefetch queue: with partitions paused under backpressure,
    # this is what bounds the ingest's memory under any backlog.
    "queued.max.messages.kbytes": 8192,
    # Once that queue is full librdkafka backs off fetching for 1 s by default, which stalls
    # the ingest after every resume; retry the fetch sooner.
    "fetch.queue.backoff.ms": 20,
}


def _base(kafka: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = dict(kafka.client_config())
    conf.setdefault("logger", _librdkafka_logger)
    conf.setdefault("error_cb", RefusalLogger(kafka))
    return conf


def admin_client(kafka: KafkaSettings, **overrides: Any) -> AdminClient:
    """An AdminClient. Keep a reference until its futures resolve."""
    return AdminClient({**_base(kafka), **overrides})


def producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer (``acks=all``, no reordering or duplicates on retry).

    Batching settings favour throughput at a few milliseconds of latency: results are produced
    in bursts, one per finished micro-batch. ``allow.auto.create.topics`` is off (librdkafka's
    producer default is on): rayml writes only to topics that exist, so a request's
    ``reply_to`` can never have the broker create a topic, whatever its
    ``auto.create.topics.enable``.
    """
    conf = {
        **_base(kafka),
        "allow.auto.create.topics": False,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        **overrides,
    }
    return Producer(conf)


def transactional_producer(
    kafka: KafkaSettings, transactional_id: str, timeout_s: float, **overrides: Any
) -> Producer:
    """A transactional producer (exactly-once; see :mod:`rayml.delivery.transactions`).

    ``transactional_id`` must be stable for one logical writer: a new producer with the same id
    fences the old one (its next transactional call fails fatally), which is how a restarted
    ingest stops a zombie predecessor. ``timeout_s`` is ``transaction.timeout.ms``: the broker
    aborts a transaction left open longer (its producer died), which unblocks read_committed
    readers of the partitions it wrote.

    ``retry.backoff.ms`` is short because the broker answers the first write of a transaction
    that follows a commit with CONCURRENT_TRANSACTIONS until its markers are written (a few
    ms); at librdkafka's default 100 ms backoff every commit would cost about 100 ms more.
    """
    conf = {
        **_base(kafka),
        "allow.auto.create.topics": False,  # as producer() says
        "transactional.id": transactional_id,
        "transaction.timeout.ms": int(timeout_s * 1000),
        "enable.idempotence": True,
        "acks": "all",
        **RESULT_BATCHING,
        "retry.backoff.ms": 10,
        **overrides,
    }
    return Producer(conf)


def ingest_producer(
    kafka: KafkaSettings, executor: ExecutorSettings, ingest_id: str
) -> tuple[Producer, str | None]:
    """The ingest's producer for its delivery mode, and its transactional id (exactly-once).

    The id is stable per ingest id: a Ray-restarted ingest actor (same id) fences its zombie.
    ``message.max.bytes`` leaves room for a dead-letter or hand-off copy of any request the
    ingest accepts, with its headers (librdkafka's default, 1,000,000 bytes, is below Kafka's
    1 MiB default).
    """
    if executor.delivery != "exactly_once":
        return producer(kafka, **_room(executor), **RESULT_BATCHING), None
    txn_id = f"{executor.group_id}.{ingest_id}"
    return output_producer(kafka, executor, txn_id), txn_id


def output_producer(
    kafka: KafkaSettings, executor: ExecutorSettings, transactional_id: str
) -> Producer:
    """The transactional producer of an ingest or a job runner (exactly-once)."""
    return transactional_producer(
        kafka, transactional_id, executor.transaction_timeout_s, **_room(executor)
    )


def reply_timeout_s(executor: ExecutorSettings) -> float:
    """Exactly-once: how long a write outside the transaction may take (``message.timeout.ms``
    of :func:`reply_producer`): well inside the transaction timeout, which the commit that
    waits for it must not outlast."""
    return min(5.0, executor.transaction_timeout_s / 3)


def reply_producer(kafka: KafkaSettings, executor: ExecutorSettings) -> Producer:
    """Exactly-once: the idempotent producer of the writes outside the transaction (to the
    ``reply_to`` topics requesters name; :mod:`rayml.delivery.outside_writes` says why). A write
    that is not acknowledged in :func:`reply_timeout_s` fails (``_MSG_TIMED_OUT``, naming its
    topic); its queue is bounded (64 MiB)."""
    return producer(
        kafka,
        **_room(executor),
        **{
            "message.timeout.ms": max(1, int(reply_timeout_s(executor) * 1000)),
            "queue.buffering.max.kbytes": 65_536,
            # A commit waits for these writes' reports (the loop meanwhile): send them soon.
            "linger.ms": 1,
        },
    )


def _room(executor: ExecutorSettings) -> dict[str, Any]:
    return {"message.max.bytes": max(1_000_000, executor.max_request_bytes + 65_536)}


def consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer-group member with manual commits and the KIP-848 group protocol.

    ``enable.auto.commit`` is off: rayml commits only offsets whose results are written.
    ``enable.auto.offset.store`` is off for the same reason.
    """
    conf = {
        **_base(kafka),
        "group.id": group_id,
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **overrides,
    }
    return Consumer(conf)


def ingest_consumer(
    kafka: KafkaSettings,
    group_id: str,
    client_id: str,
    drain_timeout_s: float = 30.0,
    on_commit: Callable[[Any, list[TopicPartition]], None] | None = None,
) -> Consumer:
    """The ingest's consumer: :func:`consumer` with fetch settings for micro-batching.

    ``on_commit`` is told the outcome of each commit (:func:`commit_offsets_async`), in a poll.

    A revocation or a shutdown drains for up to ``drain_timeout_s`` without polling; librdkafka
    also sends ``max.poll.interval.ms`` as the KIP-848 rebalance timeout. So it is kept above
    the drain (a minute of margin), or a long drain would get the member fenced and its final
    commit refused.
    """
    return consumer(
        kafka,
        group_id,
        **{
            "client.id": client_id,
            "max.poll.interval.ms": max(300_000, int((drain_timeout_s + 60) * 1000)),
            **INGEST_FETCH,
            **({} if on_commit is None else {"on_commit": on_commit}),
        },
    )


def commit_offsets(consumer: Consumer, offsets: dict[TP, int], owner: str) -> dict[TP, int]:
    """Commit ``offsets`` synchronously; return those the broker accepted.

    Per-partition failures are not raised by confluent-kafka, only reported on each returned
    partition: they are checked and logged here. A failed commit is not retried: the offsets
    stay committable and go with the next commit (or are redelivered to the next owner).
    """
    if not offsets:
        return {}
    parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    try:
        answered = consumer.commit(offsets=parts, asynchronous=False) or []
    except Exception as exc:  # KafkaException: e.g. not the owner any more
        logger.warning("%s: commit failed: %s", owner, exc)
        return {}
    accepted = committed_in(None, answered, owner)
    return {tp: offset for tp, offset in accepted.items() if tp in offsets}


def commit_offsets_async(consumer: Consumer, offsets: dict[TP, int], owner: str) -> None:
    """Send a commit of ``offsets`` without waiting for the broker (a refusal to send is
    logged; the offsets stay committable).

    The outcome comes to the consumer's ``on_commit`` callback (:func:`ingest_consumer`), served
    by a later poll on the same thread; a refused commit leaves the offsets committable, so the
    next commit carries them. Only watermarks are ever sent (everything below is done), so no
    commit can skip an unfinished record. One window for duplicates (never for loss): an async
    commit that times out is retried by librdkafka after a backoff, and if a later synchronous
    commit (a revocation, the shutdown) lands inside that backoff, the retry can set the
    committed offset back to the older watermark; the records between are then run again by
    the next owner, as at-least-once allows.
    """
    if not offsets:
        return
    parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    try:
        consumer.commit(offsets=parts, asynchronous=True)
    except Exception as exc:  # KafkaException: e.g. not the owner any more
        logger.warning("%s: commit failed: %s", owner, exc)


def committed_in(err: Any, partitions: list[TopicPartition], owner: str) -> dict[TP, int]:
    """The offsets an ``on_commit`` callback reports accepted (failures logged)."""
    if err is not None:
        logger.warning("%s: commit failed: %s", owner, err)
        return {}
    accepted: dict[TP, int] = {}
    for tp in partitions:
        if tp.error is not None:
            logger.warning(
                "%s: commit of %s[%d] failed: %s", owner, tp.topic, tp.partition, tp.error
            )
        elif tp.offset >= 0:
            accepted[(tp.topic, tp.partition)] = tp.offset
    return accepted


def set_pause_state(consumer: Consumer, partitions: list[TopicPartition], paused: bool) -> None:
    """Pause or resume newly assigned ``partitions`` to match the member's backpressure state.

    Call it from ``on_assign``. librdkafka keeps a partition's pause across its revocation: a
    partition let go of while paused comes back paused, and would stay so if only paused
    members set the state.
    """
    if partitions:
        (consumer.pause if paused else consumer.resume)(partitions)


def pause_strays(consumer: Consumer, messages: list[Message], owner: str) -> None:
    """Pause the partitions of records a paused member read (their pause did not hold).

    ``pause()`` skips, without an error, a partition librdkafka has no object for yet, e.g.
    one assigned for the first time while the member was paused. The records are the caller's
    to keep: dropping them would leave a gap that the commit watermark skips.
    """
    stray = [TopicPartition(m.topic(), m.partition()) for m in messages if m.error() is None]  # type: ignore[arg-type]
    if stray:
        logger.warning("%s read from %s while paused: pausing it", owner, partition_names(stray))
        consumer.pause(stray)


def partition_names(partitions: list[TopicPartition]) -> str:
    """``topic[p], ...`` for log lines (``nothing`` for none)."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
