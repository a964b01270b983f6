"""What each model serves, as the compacted models topic says: a follower thread.

Both the job runner's promotion gate (:mod:`rayml.training.gate`: what is served now, to compare
a new version with) and every ingest (:mod:`rayml.executor.version_follower`: which version a
request without ``model_version`` gets) keep a :class:`ServingState`. It is a background thread
assigned every partition of the models topic from the beginning, with no consumer group and
nothing committed, so it reads each model's newest serving record at start (also after a
restart) and every new one within about 0.1 s of its write. Records are
:class:`~rayml.models.promotion.ServingRecord` (older announcements read as records too); a
tombstone forgets its model.

:meth:`ServingState.wait_caught_up` tells when the thread has read the topic up to where it
ended when the thread started: before that, a missing record may only be unread. The gate waits
for it (bounded) before it judges a version; the ingest does not (a model it knows nothing of
yet is served from the store meanwhile).

Example:
    >>> state = ServingState(None, None)   # no Kafka: records only from apply()
    >>> state.wait_caught_up(0), state.get("iris")
    (True, None)
    >>> from rayml.models.promotion import ServingRecord
    >>> state.apply(ServingRecord(name="iris", version="000002"))
    >>> state.get("iris").version
    '000002'
    >>> state.close()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from rayml.config import KafkaSettings
from rayml.errors import InvalidModelNameError
from rayml.kafka import clients as kafka_clients
from rayml.models.promotion import ServingRecord, decode_serving
from rayml.protocol.model_names import validate_model_name, validate_version

logger = logging.getLogger(__name__)

__all__ = ["ServingSource", "ServingState"]

# How often the thread looks for partitions added to the models topic (or the topic itself).
_METADATA_RECHECK_S = 30.0


class ServingSource(Protocol):
    """What the gate reads of the serving state (a :class:`ServingState`, a fake in tests)."""

    def get(self, model: str) -> ServingRecord | None: ...

    def wait_caught_up(self, timeout_s: float) -> bool: ...


class ServingState:
    """``model name -> serving record``, kept by a background thread from the models topic.

    Args:
        kafka: How to reach the broker; ``None``: no thread reads Kafka (records come from
            :meth:`apply` only, and ``on_tick`` still runs).
        topic: The models topic.
        on_record: Called on the thread with each model whose record changed.
        on_tick: Called on the thread about every ``tick_s`` (the ingest's store refresh).
        tick_s: See ``on_tick``.
        start: Start the thread now (else call :meth:`start`, e.g. once the callbacks' owner
            is fully built).
    """

    def __init__(
        self,
        kafka: KafkaSettings | None,
        topic: str | None,
        *,
        on_record: Callable[[str], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 0.2,
        start: bool = True,
    ) -> None:
        self._kafka = kafka if topic is not None else None
        self._topic = topic
        self._on_record = on_record
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._records: dict[str, ServingRecord] = {}
        self.records_read = 0
        self._caught_up = threading.Event()
        if self._kafka is None:
            self._caught_up.set()
        # Partition -> the offset the thread must reach to have read what was there at start.
        self._targets: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-state", daemon=True)
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Start the thread (once)."""
        if not self._started:
            self._started = True
            self._thread.start()

    # -- reading (any thread) -------------------------------------------------------------------

    def get(self, model: str) -> ServingRecord | None:
        """The serving record of ``model``, or ``None`` if there is none (or not read yet)."""
        return self._records.get(model)

    def snapshot(self) -> dict[str, ServingRecord]:
        """A copy of every record read."""
        return dict(self._records)

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until the topic was read up to where it ended at start; False on timeout."""
        return self._caught_up.wait(timeout_s)

    def apply(self, record: ServingRecord | None, model: str | None = None) -> None:
        """Take ``record`` as ``model``'s (``None``: forget it); what the thread does per record."""
        name = record.name if record is not None else model
        if name is None:
            return
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record
        if self._on_record is not None:
            self._on_record(name)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (and its consumer)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        consumer: Any = None
        assigned: set[int] = set()
        next_metadata = 0.0
        next_tick = time.monotonic() + self._tick_s
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._kafka is not None and now >= next_metadata:
                    next_metadata = now + _METADATA_RECHECK_S
                    consumer = consumer or self._consumer()
                    self._assign_new_partitions(consumer, assigned)
                if consumer is not None and assigned:
                    self._consume(consumer)
                    if not self._caught_up.is_set():
                        self._check_caught_up(consumer)
                else:
                    self._stop.wait(min(0.2, self._tick_s))
                if self._on_tick is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_s
                    self._on_tick()
        except Exception:
            # The ingest still serves from the store, and the gate refuses to promote while it
            # cannot read this state: log loudly and keep the process alive.
            logger.exception("serving state listener on %s stopped", self._topic)
        finally:
            if consumer is not None:
                consumer.close()

    def _consumer(self) -> Any:
        assert self._kafka is not None
        # A throwaway group id: librdkafka wants one, but the thread only uses assign() and
        # never commits, so no group is joined and every start reads the topic from the start.
        # Its prefix is the one the executor's ACLs allow (rayml.tenancy.grants).
        return kafka_clients.consumer(
            self._kafka,
            f"rayml-versions-{uuid.uuid4().hex[:12]}",
            **{"fetch.wait.max.ms": 100, "enable.partition.eof": False},
        )

    def _assign_new_partitions(self, consumer: Any, assigned: set[int]) -> None:
        assert self._topic is not None
        try:
            meta = consumer.list_topics(self._topic, timeout=5)
        except Exception as exc:  # KafkaException: broker away; try again later
            logger.warning("cannot read metadata of %s: %s", self._topic, exc)
            return
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None:
            if topic is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                # No topic, so no record: what there is to read has been read.
                self._caught_up.set()
            logger.info("models topic %s not available yet", self._topic)
            return
        new = sorted(set(topic.partitions) - assigned)
        if not new:
            return
        for partition in new:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, partition), timeout=5
                )
            except Exception as exc:  # broker away: caught up is unknown; try again later
                logger.warning("cannot read the end of %s[%d]: %s", self._topic, partition, exc)
                return
            if high > low:
                self._targets[partition] = high
        consumer.incremental_assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in new])
        assigned.update(new)

    def _check_caught_up(self, consumer: Any) -> None:
        assert self._topic is not None
        if self._targets:
            # position(), not the last offset read: transaction markers and compaction leave
            # gaps at the end that no message fills.
            positions = consumer.position([TopicPartition(self._topic, p) for p in self._targets])
            for tp in positions:
                if tp.offset >= self._targets[tp.partition]:
                    del self._targets[tp.partition]
        if not self._targets:
            self._caught_up.set()

    def _consume(self, consumer: Any) -> None:
        for msg in consumer.consume(500, timeout=0.2):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("models topic consumer error: %s", err)
                continue
            key = msg.key()
            record = decode_serving(msg.value())
            try:
                if record is not None:
                    validate_model_name(record.name)
                    # One spelling of each version ("3" and "000003" are one).
                    record = record.model_copy(update={"version": validate_version(record.version)})
                elif key and msg.value() is None:
                    # A tombstone: the model's record is gone.
                    self.apply(None, validate_model_name(key.decode(errors="replace")))
                    continue
            except InvalidModelNameError:
                logger.warning("ignoring a models record with a bad name or version: %r", key)
                continue
            if record is None:
                continue  # a record that is not ours
            self.records_read += 1
            self.apply(record)
