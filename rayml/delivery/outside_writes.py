"""Exactly-once: the writes that go outside the transaction, at-least-once.

**A transaction spans only rayml's own topics** (the tenants' result topics, the dead-letter
topic: ``own_topics`` of :class:`~rayml.delivery.transactions.TransactionalOutput`). A write to
any other topic -- a ``reply_to`` the requester named -- goes through a plain idempotent
producer, at-least-once (:class:`OutsideWrites`): the commit waits for its acknowledgement
before the offset it answers is committed (:meth:`OutsideWrites.flush`), and a failed one aborts
the transaction like a failed write inside it. Why: a transaction ends with a marker written to
every partition it wrote, and a partition that refuses the marker (a tenant may create reply
topics with any config, e.g. ``max.message.bytes=10`` or ``message.timestamp.before.max.ms=0``)
leaves the transaction half-ended for good, its ``transactional.id`` answering
``CONCURRENT_TRANSACTIONS`` to every later call, a new producer's ``init_transactions``
included: one request could stop the ingest for every tenant, on every restart. So a reply
topic's reader gets each result at least once (after an abort or a crash, possibly twice: the
clients keep the first per request id); the result topics' readers, exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rayml.delivery.out_records import OutRecord
from rayml.delivery.txn_errors import PURGED

__all__ = ["OutsideWrites"]

logger = logging.getLogger(__name__)


class OutsideWrites:
    """The open transaction's writes outside it: produced, and their reports awaited before its
    commit. Used from the loop thread only, like the transaction that owns it.

    Args:
        producer: A plain idempotent producer (``acks=all``); None where every write is in the
            transaction (no ``own_topics``).
        timeout_s: Its ``message.timeout.ms``: a commit waits that long (and a little more) for
            the reports of the transaction's writes outside it.
        owner: A name for log lines.
        on_failed_delivery: Called with (topic, key, error) of a write that failed.
        fail: Marks the open transaction for abort with an error (of a failed write); returns
            False if it already was.
        on_broken: Called with the error when the producer failed fatally: nothing more may
            commit.
    """

    def __init__(
        self,
        producer: Producer | None,
        *,
        timeout_s: float,
        owner: str,
        on_failed_delivery: Callable[[str, bytes | None, KafkaError], None],
        fail: Callable[[KafkaError], bool],
        on_broken: Callable[[KafkaError], None],
    ) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self._owner = owner
        self._on_failed_delivery = on_failed_delivery
        self._fail = fail
        self._on_broken = on_broken
        # Delivery reports count for the transaction their write was produced in (a late
        # report of an aborted one's write must not fail the next one).
        self._generation = 0
        # This transaction's writes not yet reported: (topic, key) by sequence.
        self._pending: dict[int, tuple[str, bytes | None]] = {}
        self._seq = 0
        self.written = 0  # writes produced, over all transactions

    @property
    def pending(self) -> int:
        """This transaction's writes not yet reported."""
        return len(self._pending)

    @property
    def wait_s(self) -> float:
        """How long a commit waits for their reports: 1.5 times ``timeout_s``."""
        return self.timeout_s * 1.5

    def produce(self, record: OutRecord) -> None:
        """Write ``record`` through the plain producer; :meth:`flush` waits for its report."""
        producer = self.producer
        assert producer is not None  # with own_topics (see TransactionalOutput)
        generation = self._generation
        self._seq = seq = self._seq + 1
        self.written += 1
        while True:
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=lambda err, msg: self._delivered(generation, seq, err, msg),
                )
                self._pending[seq] = (record.topic, record.key)
                return
            except BufferError:
                producer.poll(0.05)  # librdkafka's queue is full: serve the reports
            except KafkaException as exc:
                # Refused before it was queued (e.g. larger than message.max.bytes): as a
                # failed delivery, which aborts the open transaction.
                err = exc.args[0]
                if self._broken(err):
                    return
                self._on_failed_delivery(record.topic, record.key, err)
                self._fail(err)
                return

    def poll(self) -> None:
        """Serve the reports that are in, without waiting."""
        if self.producer is not None and self._pending:
            self.producer.poll(0)

    def flush(self, failed: Callable[[], bool]) -> None:
        """Wait for the reports of this transaction's writes (not when it aborts anyway:
        ``failed``). Each write fails on its own within ``timeout_s`` (its producer's
        ``message.timeout.ms``), naming its topic; one still unreported after :attr:`wait_s` is
        taken as failed the same way, so the writer learns which topic held it up."""
        producer = self.producer
        if producer is None or not self._pending or failed():
            return
        # Polled, not flushed: a flush would wait for an aborted transaction's writes too.
        wait_s = self.wait_s
        deadline = time.monotonic() + wait_s
        while self._pending and not failed() and time.monotonic() < deadline:
            producer.poll(0.01)
        if not self._pending or failed():
            return
        late = KafkaError(KafkaError._MSG_TIMED_OUT, f"not acknowledged in {wait_s:.1f} s")
        for topic, key in list(self._pending.values())[:1_000]:
            self._on_failed_delivery(topic, key, late)
        self._fail(late)

    def new_generation(self) -> None:
        """The open transaction was aborted: later reports of its writes belong to none.

        Its writes still under way may land or fail: at-least-once here, and their reports are
        ignored (not purged: a purge leaves a gap in the idempotent producer's sequence, which
        stalls it to re-sync).
        """
        self._generation += 1
        self._pending = {}

    def _delivered(self, generation: int, seq: int, err: KafkaError | None, msg: Message) -> None:
        if generation != self._generation:
            return  # a write of an aborted transaction: its record is redone
        self._pending.pop(seq, None)
        if err is None:
            return
        if self._broken(err):
            return
        if err.code() in PURGED:
            # Nothing here purges the current transaction's writes: librdkafka did, e.g. as
            # the producer failed. Not written, so not done.
            err = KafkaError(err.code(), f"{err.str()} (not written)")
        topic = msg.topic() or ""
        if self._fail(err):  # one line per transaction, not one per record
            logger.warning("ingest=%s write to %s failed: %s", self._owner, topic, err)
        self._on_failed_delivery(topic, msg.key(), err)

    def _broken(self, err: KafkaError) -> bool:
        """A fatal error of the producer (e.g. its idempotence state lost): nothing more may
        commit, and no topic is to blame; the loop stops and the actor restarts."""
        if not (err.fatal() or err.code() == KafkaError._FATAL):
            return False
        self._on_broken(err)
        return True
