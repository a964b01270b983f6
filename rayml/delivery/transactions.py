"""Exactly-once output: results and input offsets committed in one Kafka transaction.

With ``executor.delivery = "exactly_once"`` each ingest owns one transactional producer
(``transactional.id = "{group_id}.{ingest_id}"``) and :class:`TransactionalOutput` stands between
the :class:`~rayml.delivery.result_writer.ResultWriter` and it:

1. each polled record is tracked in a :class:`~rayml.delivery.reorder.ReorderBuffer`;
2. a finished record's writes (result, dead letter, DLQ copy) are held there until
   every earlier tracked record of its partition has finished too, then produced into the open
   transaction (begun on the first write) in offset order. So the transaction's input offsets are
   exactly "one past the last record produced" per partition: a crash never commits an offset
   whose result is not in, nor a result whose offset is not;
3. :meth:`commit` (every ``transaction_commit_interval_s``, on revoke, at shutdown) sends those
   offsets with the consumer's group metadata and commits. Only then are the records done.

The periodic commit does not stop the loop: the loop seals the transaction (:meth:`seal`: what
is released from then on is held, not produced), goes on polling and dispatching, and once
:meth:`delivered` says every write of it is acknowledged, :meth:`begin_commit` sends its offsets
and commits it on a thread of its own (the only transactional calls made off the loop thread;
nothing is produced meanwhile, and no delivery report is left for that thread to serve: the
commit's internal flush may serve log lines there). The
loop takes the outcome with :meth:`finish_commit`; the held writes then open the next
transaction. A commit that must include everything (revocation, drain, shutdown), an abort and
a crash first wait for a commit under way; the first then writes the held ones into the open
transaction and waits for their delivery, as before.

**A transaction spans only rayml's own topics** (the tenants' result topics, the dead-letter
topic: ``own_topics``). A write to any other topic -- a ``reply_to`` the requester named -- goes
outside it, at-least-once, acknowledged before the offset it answers is committed
(:class:`~rayml.delivery.outside_writes.OutsideWrites`, which says why: a reply topic that
refuses the transaction's end marker would leave its ``transactional.id`` stuck for good).

Failures (librdkafka's transactional error classes):

* retriable: the call is repeated (bounded), but for ``_CONFLICT`` (another call in progress:
  a commit that timed out waits to be resumed and refuses the abort that follows), which is
  abortable, so an abort refused so is fatal at once;
* abortable (``txn_requires_abort``, or a write that failed delivery): the transaction is
  aborted and :class:`~rayml.delivery.txn_errors.TransactionAbortedError` raised; the ingest
  rewinds its partitions to the committed offsets and redoes the records. Nothing of the
  aborted transaction is visible to read_committed readers;
* fatal (fenced by a newer producer with the same ``transactional.id``, i.e. this ingest is a
  zombie), or an error of none of these classes (confluent-kafka says: treat it as fatal):
  :class:`~rayml.delivery.txn_errors.ProducerFencedError`; the loop stops and the actor is
  restarted.

A producer that dies with a transaction open (SIGKILL) leaves it to the broker, which aborts it
after ``transaction_timeout_s``. Until then read_committed readers of its output partitions
wait, and so does the next owner of its input partitions (KIP-447: the offsets it fetches are
held back while a transactional commit of them is pending).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from rayml.delivery.out_records import OutRecord
from rayml.delivery.outside_writes import OutsideWrites
from rayml.delivery.reorder import ReorderBuffer
from rayml.delivery.txn_errors import (
    PURGED,
    NeedsAbort,
    ProducerFencedError,
    TransactionAbortedError,
    as_kafka_error,
    kafka_error_in,
)
from rayml.errors import InfrastructureError
from rayml.kafka.partitions import TP

logger = logging.getLogger(__name__)


_CALL_TIMEOUT_S = 30.0  # one transactional call (init, send offsets, commit, abort)


class TransactionalOutput:
    """Holds finished writes in offset order and commits them with their input offsets.

    Used from the ingest's loop thread (like the producer and the consumer), but for the
    commit :meth:`begin_commit` runs on a thread of its own: then the loop makes no
    transactional call until :meth:`finish_commit` (or a full commit, an abort, ``give_up``,
    which wait for it first).

    Args:
        producer: A producer from :func:`rayml.kafka.clients.transactional_producer`.
        transactional_id: Its ``transactional.id`` (for errors and logs).
        on_failed_delivery: Called with (topic, key, error) of a write that failed; the
            transaction is aborted at the next :meth:`commit`.
        owner: A name for log lines.
        own_topics: The topics written in the transaction; writes to any other go through
            ``outside`` (required with ``own_topics``), acknowledged before their offsets
            commit.
        outside: A plain idempotent producer (``acks=all``) for writes outside the transaction.
        outside_timeout_s: Its ``message.timeout.ms``: a commit waits that long (and a little
            more) for the reports of the transaction's writes outside it.
    """

    def __init__(
        self,
        producer: Producer,
        transactional_id: str,
        *,
        on_failed_delivery: Callable[[str, bytes | None, KafkaError], None],
        owner: str,
        own_topics: frozenset[str] | None = None,
        outside: Producer | None = None,
        outside_timeout_s: float = 5.0,
    ) -> None:
        self.producer = producer
        self.transactional_id = transactional_id
        # None: every topic is written in the transaction (only where no other can be named).
        self._own_topics = own_topics
        self.outside = outside
        self.outside_writes = OutsideWrites(
            outside,
            timeout_s=outside_timeout_s,
            owner=owner,
            on_failed_delivery=on_failed_delivery,
            fail=self._outside_failed,
            on_broken=self._outside_broken,
        )
        self._on_failed_delivery = on_failed_delivery
        self._owner = owner
        self.reorder: ReorderBuffer[list[OutRecord]] = ReorderBuffer()
        self._open = False
        # Sealed (:meth:`seal`): what is released meanwhile waits here, per partition in
        # offset order, for the next transaction.
        self._sealed = False
        self._sealed_at = 0.0
        self._held: list[tuple[TP, list[tuple[int, list[OutRecord]]]]] = []
        self.sealed_s = 0.0  # time transactions spent sealed, waiting for their writes
        # A commit under way on the commit thread (begin_commit), its outcome for finish_commit.
        self._committing: Future[float] | None = None
        self._commit_thread: ThreadPoolExecutor | None = None
        # Offsets produced in the open transaction, per partition (in order): done on commit.
        self._produced: dict[TP, list[int]] = {}
        self._failed: KafkaError | None = None  # a write of the open transaction failed
        self.usable = True  # False once fatally failed: nothing may be committed any more
        self.commits = 0
        self.aborts = 0
        self.commit_s = 0.0  # time the loop spent in commits (it polls nothing meanwhile)
        self.commit_thread_s = 0.0  # time the commit thread's commits took (the loop went on)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """``init_transactions``: fences older producers with this id, aborting their txn."""
        try:
            self._call(self.producer.init_transactions, _CALL_TIMEOUT_S)
        except NeedsAbort as exc:
            raise InfrastructureError(
                f"init_transactions of {self.transactional_id!r} failed: {exc.cause}"
            ) from None
        logger.info("ingest=%s transactional.id=%s ready", self._owner, self.transactional_id)

    # -- records ------------------------------------------------------------------------------

    def track(self, tp: TP, offset: int) -> None:
        """Track a polled record (in poll order)."""
        self.reorder.track(tp, offset)

    def stage(self, tp: TP, offset: int, records: list[OutRecord]) -> None:
        """Hand in a finished record's writes; produce what may enter the transaction now."""
        try:
            released = self.reorder.finish(tp, offset, records)
        except KeyError:
            return  # revoked or rewound meanwhile: the record is redone by whoever owns it
        if not released:
            return
        if self._sealed:
            self._held.append((tp, released))
            return
        self._write(tp, released)

    def _write(self, tp: TP, released: list[tuple[int, list[OutRecord]]]) -> None:
        """Produce released records' writes into the open transaction (opening it)."""
        produced = self._produced.setdefault(tp, [])
        own = self._own_topics
        for off, writes in released:
            produced.append(off)
            if self._failed is None:  # else the transaction aborts anyway: skip the writes
                inside = 0
                for record in writes:
                    if own is None or record.topic in own:
                        self._produce(record)
                        inside += 1
                    else:
                        self.outside_writes.produce(record)
                if not inside:
                    self._open_for_offsets()

    def _open_for_offsets(self) -> None:
        """An offset released without writes (an unanswerable record) needs an open
        transaction too, to be committed with it; errors as in :meth:`_produce`."""
        try:
            self._begin()
        except (NeedsAbort, ProducerFencedError) as exc:
            logger.warning("ingest=%s could not open a transaction: %s", self._owner, exc)
            if self._failed is None:
                self._failed = as_kafka_error(exc.cause)

    def _begin(self) -> None:
        """Open the transaction if none is open (raises as ``_call`` does)."""
        if not self._open:
            self._call(self.producer.begin_transaction)
            self._open = True

    def _produce(self, record: OutRecord) -> None:
        # Errors are not raised here (this runs inside the dispatcher's completion callbacks):
        # a fatal one marks the producer unusable, any other the transaction for abort; the
        # loop acts on either at its next commit.
        try:
            self._begin()
            while True:
                try:
                    self.producer.produce(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        on_delivery=self._delivered,
                    )
                    return
                except BufferError:
                    self.producer.poll(0.05)  # librdkafka's queue is full: serve the reports
                except KafkaException as exc:
                    # Refused before it was queued (e.g. larger than message.max.bytes): learn
                    # from it as from a failed delivery, or the redo fails the same way forever.
                    self._on_failed_delivery(record.topic, record.key, exc.args[0])
                    self._raise_classified(exc.args[0])
        except (NeedsAbort, ProducerFencedError) as exc:
            logger.warning("ingest=%s transactional write failed: %s", self._owner, exc)
            if self._failed is None:
                self._failed = as_kafka_error(exc.cause)

    def _outside_failed(self, err: KafkaError) -> bool:
        """A write outside the transaction failed: it aborts at the next :meth:`commit`.
        False if it already does (an earlier failure)."""
        if self._failed is not None:
            return False
        self._failed = err
        return True

    def _outside_broken(self, err: KafkaError) -> None:
        """The producer of writes outside failed fatally (e.g. its idempotence state lost):
        nothing more may commit; the loop stops and the actor restarts."""
        if self.usable:
            logger.error("ingest=%s the producer of reply writes failed: %s", self._owner, err)
        self.usable = False
        self._failed = self._failed or err

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None or err.code() in PURGED:
            return  # purged by an abort: a consequence, not a cause
        topic = msg.topic() or ""
        if self._failed is None:  # one line per transaction, not one per record
            logger.warning(
                "ingest=%s transactional write to %s failed: %s", self._owner, topic, err
            )
            self._failed = err
        self._on_failed_delivery(topic, msg.key(), err)

    def pending(self, tp: TP) -> int:
        """Records of ``tp`` tracked and not yet finished (released records held while the
        transaction is sealed are not counted: every commit but the periodic one writes them)."""
        return self.reorder.pending(tp)

    def unreleased(self) -> int:
        """Records tracked and not yet finished, over all partitions (as :meth:`pending`)."""
        return self.reorder.in_flight()

    def forget(self, tps: set[TP]) -> None:
        """Drop partitions (revoked, lost, rewound) from the reorder buffer and what is held."""
        self.reorder.forget(tps)
        if self._held:
            self._held = [(tp, released) for tp, released in self._held if tp not in tps]

    # -- commit and abort ---------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether records were released since the last commit (or a write failed)."""
        return bool(self._produced) or bool(self._held) or self._failed is not None

    @property
    def sealed(self) -> bool:
        return self._sealed

    def seal(self) -> bool:
        """Stop writing into the open transaction: records released from now on are held for
        the next one. False (nothing sealed) if nothing waits to be committed."""
        if self._sealed or not (self._produced or self._failed is not None):
            return self._sealed
        self._sealed = True
        self._sealed_at = time.monotonic()
        return True

    def delivered(self) -> bool:
        """Sealed, and time to commit: every write of the transaction is acknowledged and its
        report served, or one failed (the commit aborts), or it has been sealed for longer
        than a write outside it may take (1.5 times ``outside_timeout_s``: then the commit's
        own bounded waits decide, as they did before sealing). Polls the producer of writes
        outside the transaction, without waiting."""
        if not self._sealed:
            return False
        if self._failed is not None:
            return True
        outside = self.outside_writes
        outside.poll()
        if len(self.producer) == 0 and not outside.pending:
            return True
        return time.monotonic() - self._sealed_at > outside.wait_s

    @property
    def held(self) -> int:
        """Released records held for the next transaction while this one is sealed."""
        return sum(len(released) for _, released in self._held)

    @property
    def committing(self) -> bool:
        """A commit begun by :meth:`begin_commit` has not been taken by :meth:`finish_commit`."""
        return self._committing is not None

    @property
    def commit_finished(self) -> bool:
        """That commit has ended (:meth:`finish_commit` will not wait)."""
        return self._committing is not None and self._committing.done()

    def begin_commit(self, group_metadata: Any) -> bool:
        """Commit the sealed transaction on the commit thread, without waiting.

        Only when nothing is left for the commit to wait for or to learn from: sealed, every
        write acknowledged and its report served (``len(producer) == 0``), none failed, none
        outside it unanswered. False (nothing begun) otherwise: then :meth:`commit` decides,
        with its bounded waits. The loop produces nothing into the producer until
        :meth:`finish_commit` (what is released is held), so the thread's calls
        (``send_offsets_to_transaction``, ``commit_transaction``) serve no delivery report.
        """
        if (
            self._committing is not None
            or not self._sealed
            or not self.usable
            or self._failed is not None
            or not self._produced
            or self.outside_writes.pending
            or len(self.producer)
        ):
            return False
        offsets = [
            TopicPartition(tp[0], tp[1], produced[-1] + 1)
            for tp, produced in self._produced.items()
            if produced
        ]
        if self._commit_thread is None:
            self._commit_thread = ThreadPoolExecutor(1, thread_name_prefix=f"txn-{self._owner}")
        self._committing = self._commit_thread.submit(self._commit_calls, offsets, group_metadata)
        return True

    def _commit_calls(self, offsets: list[TopicPartition], group_metadata: Any) -> float:
        """The commit thread: the offsets, then the commit (retried as :meth:`_call` does)."""
        started = time.perf_counter()
        self._call(
            self.producer.send_offsets_to_transaction, offsets, group_metadata, _CALL_TIMEOUT_S
        )
        self._call(self.producer.commit_transaction, _CALL_TIMEOUT_S)
        return time.perf_counter() - started

    def finish_commit(self) -> dict[TP, list[int]]:
        """Take the outcome of the commit begun by :meth:`begin_commit` (waiting for it if it
        is under way); return the offsets now done (none if no commit was begun). What was
        held then opens the next transaction.

        Raises:
            TransactionAbortedError: it was aborted; rewind to the committed offsets.
            ProducerFencedError: the producer failed fatally; stop.
        """
        future, self._committing = self._committing, None
        if future is None:
            return {}
        try:
            self.commit_thread_s += future.result()
        except NeedsAbort as need:
            self.abort()
            raise TransactionAbortedError(self.transactional_id, need.cause) from None
        done, self._produced, self._open = self._produced, {}, False
        self.commits += 1
        self._unseal()
        return done

    def close(self) -> None:
        """Let the commit thread go (after the last commit)."""
        if self._commit_thread is not None:
            self._commit_thread.shutdown(wait=False)

    def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for what the sealed transaction waits for: the commit under
        way on the commit thread to end, or else its writes' delivery reports (served)."""
        future = self._committing
        if future is not None:
            futures_wait([future], timeout_s)
        else:
            self.producer.poll(timeout_s)

    def commit(self, group_metadata: Any, *, sealed_only: bool = False) -> dict[TP, list[int]]:
        """Commit the open transaction with its input offsets; return the offsets now done
        (with those of a commit under way on the commit thread, waited for first).

        ``sealed_only``: commit what was written before :meth:`seal` and then write what is
        held into the next transaction (the periodic commit, where :meth:`begin_commit` could
        not: a write failed, or the seal outlasted its bound). Otherwise what is held is
        written into this transaction first, so that the commit covers every released record
        (a revocation, a drain, shutdown).

        Raises:
            TransactionAbortedError: it was aborted; rewind to the committed offsets.
            ProducerFencedError: the producer failed fatally; stop.
        """
        finished = self.finish_commit()
        done = self._commit_open(group_metadata, sealed_only)
        for tp, offsets in done.items():
            finished.setdefault(tp, []).extend(offsets)
        return finished

    def _commit_open(self, group_metadata: Any, sealed_only: bool) -> dict[TP, list[int]]:
        if not self.usable:
            raise ProducerFencedError(
                self.transactional_id, as_kafka_error(self._failed or "unusable")
            )
        if not sealed_only:
            self._unseal()
        if not self.dirty:
            return {}
        offsets = [
            TopicPartition(tp[0], tp[1], produced[-1] + 1)
            for tp, produced in self._produced.items()
            if produced
        ]
        started = time.perf_counter()
        try:
            # Writes outside the transaction acknowledged before their offsets commit.
            self.outside_writes.flush(lambda: self._failed is not None)
            # Delivery reports first: a write that failed aborts the transaction.
            try:
                self.producer.flush(_CALL_TIMEOUT_S)
            except (KafkaException, SystemError) as exc:  # a fatal error, from flush and poll
                err = kafka_error_in(exc)
                if err is None:
                    raise
                self._raise_classified(err)
            if self._failed is not None:
                raise NeedsAbort(self._failed)
            if offsets:
                self._call(
                    self.producer.send_offsets_to_transaction,
                    offsets,
                    group_metadata,
                    _CALL_TIMEOUT_S,
                )
            self._call(self.producer.commit_transaction, _CALL_TIMEOUT_S)
        except NeedsAbort as need:
            self.abort()
            raise TransactionAbortedError(self.transactional_id, need.cause) from None
        finally:
            self.commit_s += time.perf_counter() - started
        done, self._produced, self._open = self._produced, {}, False
        self.commits += 1
        self._unseal()
        return done

    def _unseal(self) -> None:
        """Write what is held into the open transaction (opening one if none is)."""
        if self._sealed:
            self.sealed_s += time.monotonic() - self._sealed_at
        self._sealed = False
        held, self._held = self._held, []
        for tp, released in held:
            self._write(tp, released)

    def abort(self) -> None:
        """Abort the open transaction (if any) and forget what it held (after a commit under
        way on the commit thread has ended: one that went through leaves nothing to abort)."""
        future, self._committing = self._committing, None
        if future is not None:
            try:
                future.result()
                self._open = False  # committed; what it held is done, and redone anyway
                self.commits += 1
            except Exception:  # failed: aborted below (a fatal error shows there too)
                pass
        self._produced = {}
        if self._sealed:
            self.sealed_s += time.monotonic() - self._sealed_at
        self._sealed, self._held = False, []
        self.outside_writes.new_generation()  # later reports of its writes outside: ignored
        if not self._open:
            self._failed = None
            return
        self._open = False
        self.aborts += 1
        try:
            self._call(self.producer.abort_transaction, _CALL_TIMEOUT_S)
        except NeedsAbort as exc:  # an abort that itself needs an abort: the producer is broken
            self.usable = False
            raise ProducerFencedError(self.transactional_id, as_kafka_error(exc.cause)) from None
        finally:
            # After the abort: its flush runs delivery reports of the aborted writes, whose
            # failures belong to this transaction, not to the next one.
            self._failed = None
        logger.warning("ingest=%s transaction aborted", self._owner)

    def give_up(self, exc: BaseException) -> BaseException:
        """After the loop crashed: commit nothing more, and name a fatal Kafka error.

        Returns:
            A :class:`ProducerFencedError` if ``exc`` is librdkafka's fatal error (confluent-kafka
            raises it from ``poll`` and ``flush`` too), else ``exc``. The open transaction is
            aborted where the producer still can, so read_committed readers need not wait for
            the transaction timeout.
        """
        self.usable = False
        future, self._committing = self._committing, None
        if future is not None:
            try:
                future.result(timeout=5.0)
                self._open = False  # it committed
            except Exception:  # failed, or still running: see below
                if not future.done():
                    return exc  # no abort beside a commit under way: left to the broker's timeout
        err = kafka_error_in(exc)
        if err is not None and err.fatal():
            return ProducerFencedError(self.transactional_id, err)
        if isinstance(exc, ProducerFencedError) or not self._open:
            return exc
        try:
            self.producer.abort_transaction(5.0)
        except KafkaException as abort_exc:
            logger.warning("ingest=%s abort after a crash failed: %s", self._owner, abort_exc)
        self._open = False
        return exc

    # -- calls and their error classes --------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a transactional API, retrying retriable errors for up to ``_CALL_TIMEOUT_S``.

        Not ``_CONFLICT`` (flagged retriable): another call is in progress, e.g. a commit that
        timed out and waits to be resumed refuses the abort that follows it; retrying the abort
        cannot end that, so it is the abortable error it is (an abort that fails so is fatal).
        """
        deadline = time.monotonic() + _CALL_TIMEOUT_S
        while True:
            try:
                return fn(*args)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if (
                    err.retriable()
                    and not err.fatal()
                    and err.code() != KafkaError._CONFLICT
                    and time.monotonic() < deadline
                ):
                    logger.info("ingest=%s %s: %s; retrying", self._owner, fn.__name__, err)
                    time.sleep(0.05)
                    continue
                if not (err.fatal() or err.txn_requires_abort() or err.retriable()):
                    # None of librdkafka's transactional classes: confluent-kafka's guidance is
                    # to treat it as fatal (a restart, not a rewind that would fail alike).
                    self.usable = False
                    raise ProducerFencedError(self.transactional_id, err) from exc
                self._raise_classified(err)

    def _raise_classified(self, err: KafkaError) -> None:
        if err.fatal():
            self.usable = False
            raise ProducerFencedError(self.transactional_id, err)
        # Abortable, or retried in vain: abort and redo from the committed offsets.
        raise NeedsAbort(err)
