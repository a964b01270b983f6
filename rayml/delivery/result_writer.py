"""Writing what the ingest owes Kafka: results, dead letters, job hand-offs.

Every write that finishes an input record carries that record's (partition, offset), and the
record is reported done only from the producer's delivery callback, i.e. once the broker has
acknowledged the write (``acks=all``, idempotent producer). That is the whole at-least-once
argument: nothing is committed that was not durably answered.

Failed deliveries are not dropped:

* errors of the connection (broker away, leader moving, a timeout) are produced again;
* a ``reply_to`` topic that cannot be written gets the result on the result topic instead. A
  missing topic fails with ``UNKNOWN_TOPIC_OR_PART`` (after 30 s), which decides at once; a
  *timeout* may be the topic or a broker outage, so the broker's metadata decides. It is asked
  off the loop thread (:mod:`rayml.kafka.topic_checks`): the timed-out results wait, parked, until
  the answer is in and :meth:`ResultWriter.settle` (called by the loop) writes them where they
  can go;
* a result too large for the topic (refused by the broker or already by ``produce()``) is
  replaced by an error result that says so; a dead-letter or hand-off copy too large is written
  with its key and headers but without its value (``rayml.value_dropped_bytes``).

With ``executor.delivery = "exactly_once"`` the writer is given a ``stage`` function instead of
producing: each input record's writes (its result, or dead letter, or job hand-off, or result
*and* DLQ copy) go to :class:`rayml.delivery.transactions.TransactionalOutput` as one list, which
holds them until they may enter the open transaction in offset order. A failed delivery there aborts
the transaction and the records are redone; :meth:`ResultWriter.note_failed_delivery` remembers
why, so the redo writes the result where it can go (the result topic instead of an unwritable
``reply_to``, an error result instead of one too large).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rayml.delivery.out_records import Answer, OutRecord, Parked, Stage, too_large_result
from rayml.delivery.recent import RecentSet
from rayml.delivery.screening import dead_letter_record
from rayml.errors import RequestTooLargeError
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers, PolledRecord, headers_of
from rayml.kafka.topic_checks import TOPIC_ERRORS, TopicChecks
from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
from rayml.protocol.envelopes import ErrorInfo, ModelRef, Request, Result, Timings, encode_result

logger = logging.getLogger(__name__)


class ResultWriter:
    """Produces the ingest's outputs and reports each finished input record.

    Args:
        producer: An idempotent producer (see :func:`rayml.kafka.clients.producer`).
        output_topic: Where results go when a request names no ``reply_to``.
        dlq_topic: Dead letters.
        jobs_topic: Training hand-offs.
        on_done: Called with (partition, offset) when a record's write is acknowledged.
        owner: A name for log lines.
        stage: Exactly-once: called with (partition, offset, writes) instead of producing;
            ``on_done`` is then not called (a record is done when its transaction commits).
    """

    def __init__(
        self,
        producer: Producer,
        *,
        output_topic: str,
        dlq_topic: str,
        jobs_topic: str,
        on_done: Callable[[TP, int], None],
        owner: str,
        stage: Stage | None = None,
    ) -> None:
        self.producer = producer
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.jobs_topic = jobs_topic
        self._on_done = on_done
        self._owner = owner
        self.results_ok = 0
        self.results_error = 0
        self.dead_letters = 0
        self.jobs_handed_off = 0
        self._stage = stage
        # What failed deliveries taught: reply_to topics that cannot be written (both modes),
        # results too large for their topic (exactly-once; see note_failed_delivery).
        # Bounded and forgetful (hostile requests can name a fresh bogus topic each time; a
        # topic created later becomes writable again).
        self.unwritable_topics = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        self.too_large = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        # Exactly-once: request ids whose reply topic refused even the small error result; the
        # redo writes it to the result topic.
        self.refused_small = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        self.unanswerable = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        # Exactly-once: request ids whose hand-off the jobs topic refused as too large.
        self.handoffs_refused = RecentSet(_MAX_REMEMBERED, _REMEMBER_S)
        # Results whose reply_to write timed out, per topic (at-least-once), while the broker is
        # asked (off the loop thread) whether the topic is to blame; exactly-once asks too.
        self._checks = TopicChecks(producer, _METADATA_TIMEOUT_S)
        self._parked: dict[str, list[Parked]] = {}

    # -- what the ingest calls ----------------------------------------------------------------

    def answer(
        self,
        tp: TP,
        offset: int,
        request_id: str,
        pipeline: str,
        request: Request | None,
        *,
        output: Any = None,
        error: ErrorInfo | None = None,
        model: ModelRef | None = None,
        timings: Timings | None = None,
        attempts: int = 1,
        received_ms: float | None = None,
        dead_letter: tuple[bytes, DeadLetter] | None = None,
    ) -> None:
        """Write the one result of a request; the record is done once it is acknowledged.

        With ``dead_letter`` (original bytes and why), a DLQ copy is written too, and the
        record is done only when *both* are acknowledged.
        """
        if timings is None and received_ms is not None:
            timings = Timings(total_ms=round(time.time() * 1000.0 - received_ms, 3))
        tenant = request.tenant if request else None
        if error is None:
            result = Result.ok(
                request_id,
                pipeline,
                output,
                model=model,
                timings=timings,
                attempts=attempts,
                tenant=tenant,
            )
            self.results_ok += 1
        else:
            result = Result.failed(
                request_id,
                pipeline,
                error,
                model=model,
                timings=timings,
                attempts=attempts,
                tenant=tenant,
            )
            self.results_error += 1
        try:
            value = encode_result(result)
        except ValueError as exc:  # the pipeline returned something JSON cannot carry
            value = encode_result(
                Result.failed(
                    request_id,
                    pipeline,
                    ErrorInfo(
                        type="invalid_output",
                        message=f"the pipeline's output is not JSON-serialisable: {exc}",
                    ),
                    model=model,
                    timings=timings,
                    attempts=attempts,
                    tenant=tenant,
                )
            )
        topic = self._result_topic(request.reply_to if request else None)
        key = request_id.encode()
        if self._stage is not None:
            answer = Answer(tp, request_id, pipeline, attempts, tenant)
            staged = self._staged_results(topic, value, answer)
            if dead_letter is not None:
                raw, letter = dead_letter
                self.dead_letters += 1
                dlq = OutRecord(self.dlq_topic, raw, key, list(dead_letter_headers(letter)))
                staged.insert(0, dlq)
            self._stage(tp, offset, staged)
            return
        done = self._countdown(tp, offset, 2 if dead_letter else 1)
        if dead_letter is not None:
            raw, letter = dead_letter
            self.dead_letters += 1
            self._produce(self.dlq_topic, raw, key, list(dead_letter_headers(letter)), done)
        answer = Answer(tp, request_id, pipeline, attempts, tenant)
        self._produce(topic, value, key, None, done, answer)

    def answer_ok(
        self,
        tp: TP,
        offset: int,
        request: Request,
        output: Any,
        *,
        model: dict[str, str] | None,
        timings: dict[str, float],
        attempts: int,
    ) -> None:
        """Write an ``ok`` result: the per-request hot path.

        Builds the envelope as a plain dict and encodes it with orjson (about 1 µs) instead of
        constructing and dumping a pydantic ``Result`` (about 15 µs); the bytes are the same
        envelope (a unit test holds the two paths equal). An output orjson cannot encode goes
        through :meth:`answer`, which turns it into an ``invalid_output`` error.
        """
        doc: dict[str, Any] = {
            "v": 1,
            "id": request.id,
            "pipeline": request.pipeline,
            "status": "ok",
            "result": output,
        }
        if model is not None:
            doc["model"] = model
        doc["timings"] = timings
        doc["attempts"] = attempts
        if request.tenant is not None:
            doc["tenant"] = request.tenant
        try:
            value = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            self.answer(
                tp,
                offset,
                request.id,
                request.pipeline,
                request,
                output=output,
                model=ModelRef(**model) if model else None,
                timings=Timings(**timings),
                attempts=attempts,
            )
            return
        self.results_ok += 1
        answer = Answer(tp, request.id, request.pipeline, attempts, request.tenant)
        if self._stage is not None:
            topic = self._result_topic(request.reply_to)
            self._stage(tp, offset, self._staged_results(topic, value, answer))
            return
        self._produce(
            self._result_topic(request.reply_to),
            value,
            request.id.encode(),
            None,
            partial(self._on_done, tp, offset),
            answer,
        )

    def dead_letter(self, msg: PolledRecord, error_type: str, message: str) -> None:
        """Dead-letter an unanswerable record with its original bytes, key and headers."""
        tp, offset, headers = dead_letter_record(msg, error_type, message)
        self.dead_letters += 1
        if self._stage is not None:
            self._stage(
                tp, offset, [OutRecord(self.dlq_topic, msg.value() or b"", msg.key(), headers)]
            )
            return
        self._produce(
            self.dlq_topic,
            msg.value() or b"",
            msg.key(),
            headers,
            self._countdown(tp, offset, 1),
        )

    def hand_off_job(self, msg: PolledRecord, tp: TP, offset: int, request: Request) -> None:
        """Forward a training request to the jobs topic.

        Durable hand-off: once the jobs topic has it, this input record is done, so hours of
        training never hold back inference commits on the same partition.
        """
        value = msg.value() or b""

        def refused() -> None:
            # The jobs topic refuses the request (its max.message.bytes is below the input
            # topic's): answer it with an error rather than hand off an empty record.
            self.answer(
                tp,
                offset,
                request.id,
                request.pipeline,
                request,
                error=ErrorInfo(
                    type=RequestTooLargeError.type,
                    message=f"the training request is {len(value)} bytes, more than the jobs "
                    f"topic {self.jobs_topic!r} accepts",
                    details={"size": len(value), "topic": self.jobs_topic},
                ),
            )

        if self._stage is not None:
            if request.id in self.handoffs_refused:
                refused()  # the redo of a refused hand-off (exactly-once)
                return
            self.jobs_handed_off += 1
            job = OutRecord(self.jobs_topic, value, request.id.encode(), headers_of(msg))
            self._stage(tp, offset, [job])
            return
        self.jobs_handed_off += 1
        self._produce(
            self.jobs_topic,
            value,
            request.id.encode(),
            headers_of(msg),
            self._countdown(tp, offset, 1),
            on_refused=refused,
        )

    # -- exactly-once: staged writes ----------------------------------------------------------

    def note_failed_delivery(self, topic: str, key: bytes | None, err: KafkaError) -> None:
        """Learn from a write that failed in an (aborted) transaction, for the redo.

        In a transaction a failed write cannot be produced again on its own: the transaction
        aborts and its records are redone from their input offsets. So that the redo does not
        fail the same way, a result too large for its topic is answered with an error result,
        and an unwritable ``reply_to`` topic is replaced by the result topic (as at-least-once
        does). A timed-out write's topic is asked about off the loop thread, as at-least-once
        asks; if the answer comes after the redo, the redo fails once more and aborts again.
        """
        if topic == self.jobs_topic and err.code() == KafkaError.MSG_SIZE_TOO_LARGE and key:
            self.handoffs_refused.add(key.decode(errors="replace"))  # redone as an error answer
            return
        if topic in (self.dlq_topic, self.jobs_topic):
            return  # nothing to change: redone as they are (at-least-once retries them too)
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and key is not None:
            rid = key.decode(errors="replace")
            # First refusal: the redo sends the small error result instead; second (the topic
            # refuses even that): the redo sends it to the result topic; third (the result
            # topic refuses it too): the redo writes nothing for it. No abort loop.
            if rid in self.refused_small:
                self.unanswerable.add(rid)
            elif rid in self.too_large:
                self.refused_small.add(rid)
            else:
                self.too_large.add(rid)
        elif topic != self.output_topic and topic not in self.unwritable_topics:
            if err.code() in TOPIC_ERRORS:
                self._learn_unwritable(topic, err)
            else:
                self._checks.ask(topic)  # answered in settle()

    def _result_topic(self, reply_to: str | None) -> str:
        """Where a result goes: its ``reply_to``, unless none or one found unwritable."""
        if not reply_to:
            return self.output_topic
        if reply_to in self.unwritable_topics:
            self.unwritable_topics.add(reply_to)  # still named by requests: keep knowing it
            return self.output_topic
        return reply_to

    # -- failed reply_to writes -----------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Results waiting for the broker's word on their ``reply_to`` topic."""
        return sum(len(waiting) for waiting in self._parked.values())

    def settle(self, wait_s: float = 0.0) -> int:
        """Write the parked results whose topic question is answered; how many were written.

        An unwritable topic's results go to the result topic (and later results for it go there
        at once); otherwise they are produced to their topic again. Called by the ingest's loop;
        waits up to ``wait_s`` for an answer when one is open.
        """
        written = 0
        for topic, why in self._checks.answered(wait_s):
            parked = self._parked.pop(topic, [])
            if why is not None:
                self._learn_unwritable(topic, why)
            elif parked:
                logger.warning(
                    "ingest=%s delivery of %d results to %s failed (%s); retrying",
                    self._owner,
                    len(parked),
                    topic,
                    parked[0].err,
                )
            target = self._result_topic(topic)
            for p in parked:
                self._produce(target, p.value, p.key, p.headers, p.done, p.answer)
            written += len(parked)
        return written

    def forget(self, tps: set[TP]) -> int:
        """Drop the parked results of partitions let go of (their new owner answers them)."""
        dropped = 0
        for topic, parked in list(self._parked.items()):
            keep = [p for p in parked if p.answer.tp not in tps]
            dropped += len(parked) - len(keep)
            self._parked[topic] = keep
        return dropped

    def _learn_unwritable(self, topic: str, why: object) -> None:
        if topic in self.unwritable_topics:
            return
        self.unwritable_topics.add(topic)
        logger.warning(
            "ingest=%s cannot write to %s (%s); using %s",
            self._owner,
            topic,
            why,
            self.output_topic,
        )

    def close(self) -> None:
        """Stop asking the broker about topics (parked results stay unfinished: redelivered)."""
        self._checks.close()

    def _staged_results(self, topic: str, value: bytes, answer: Answer) -> list[OutRecord]:
        """Exactly-once: the result record(s) to stage, after what failed writes taught."""
        if answer.request_id in self.unanswerable:
            logger.error(
                "ingest=%s the result topic %s refuses even the error result of %s: it is not "
                "answered",
                self._owner,
                self.output_topic,
                answer.request_id,
            )
            return []
        if answer.request_id in self.too_large:
            value = too_large_result(answer, len(value), topic)
        if topic in self.unwritable_topics or answer.request_id in self.refused_small:
            topic = self.output_topic
        return [OutRecord(topic, value, answer.request_id.encode(), None)]

    # -- producing ----------------------------------------------------------------------------

    def _countdown(self, tp: TP, offset: int, writes: int) -> Callable[[], None]:
        if writes == 1:
            return lambda: self._on_done(tp, offset)
        left = [writes]

        def one_done() -> None:
            left[0] -= 1
            if left[0] == 0:
                self._on_done(tp, offset)

        return one_done

    def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers | None,
        done: Callable[[], None],
        answer: Answer | None = None,
        shrunk: bool = False,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """Produce one record; ``done`` runs once the broker has it (or it is given up).

        ``shrunk``: ``value`` is already the small error result of a refused one.
        ``on_refused``: what to do instead when a record that is not a result is too large for
        its topic (by default it is written without its value).
        """

        def delivered(err: KafkaError | None, _msg: Message | None) -> None:
            if err is None:
                done()
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                if answer is not None and not shrunk:
                    logger.warning(
                        "ingest=%s result of %s too large for %s",
                        self._owner,
                        answer.request_id,
                        topic,
                    )
                    small = too_large_result(answer, len(value), topic)
                    self._produce(topic, small, key, headers, done, answer, shrunk=True)
                elif answer is not None and topic != self.output_topic:
                    # The reply topic refuses even the small error result (a tiny
                    # max.message.bytes): one bounded try, then the result topic, with the reason.
                    logger.warning(
                        "ingest=%s %s refuses even the error result of %s; it goes to %s",
                        self._owner,
                        topic,
                        answer.request_id,
                        self.output_topic,
                    )
                    self._produce(self.output_topic, value, key, headers, done, answer, True)
                elif answer is not None:
                    # The result topic itself refuses a few hundred bytes: misconfigured. Give
                    # up on this answer (its offset is done) rather than loop.
                    logger.error(
                        "ingest=%s the result topic %s refuses even the %d-byte error result of "
                        "%s: it is not answered",
                        self._owner,
                        topic,
                        len(value),
                        answer.request_id,
                    )
                    done()
                elif on_refused is not None:
                    on_refused()
                else:
                    # A dead letter or hand-off copy of a record the input topic took but this
                    # one refuses: keep its key and headers, say how large it was, drop the
                    # bytes (retrying would fail the same way forever).
                    logger.error(
                        "ingest=%s copy of %d bytes too large for %s; written without its value",
                        self._owner,
                        len(value),
                        topic,
                    )
                    stub = [*(headers or []), ("rayml.value_dropped_bytes", str(len(value)))]
                    self._produce(topic, b"", key, stub, done)
            elif topic != self.output_topic and answer is not None:
                # A reply_to write failed. If the topic is to blame (e.g. it does not exist),
                # answer on the result topic rather than never: the result still names the
                # request id. Learnt once: later results for it go to the result topic at once.
                if topic in self.unwritable_topics or err.code() in TOPIC_ERRORS:
                    self._learn_unwritable(topic, err)
                    self._produce(self.output_topic, value, key, headers, done, answer)
                else:  # a timeout: the topic may be missing or the broker away; ask (settle)
                    self._parked.setdefault(topic, []).append(
                        Parked(value, key, headers, done, answer, err)
                    )
                    self._checks.ask(topic)
            else:
                logger.warning(
                    "ingest=%s delivery to %s failed (%s); retrying", self._owner, topic, err
                )
                self._produce(topic, value, key, headers, done, answer)

        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=delivered
                )
                return
            except BufferError:
                # librdkafka's queue is full: serve delivery reports to make room.
                self.producer.poll(0.05)
            except KafkaException as exc:
                # Refused before it was queued: larger than the producer's message.max.bytes.
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError) or err.code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                delivered(err, None)
                return


_METADATA_TIMEOUT_S = 5.0
# What failed writes teach (unwritable topics, too-large results) is kept this long, at most
# this many of each.
_REMEMBER_S = 600.0
_MAX_REMEMBERED = 10_000
