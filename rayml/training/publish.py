"""What the job runner writes to Kafka: serving records, results, job events, dead letters.

A job's new version first goes through the promotion gate (:mod:`rayml.training.gate`): the
result says whether it is served and why (``promoted``, ``promotion``), and only a version let
through gets a serving record.

At-least-once (the default), all of it goes through one idempotent producer owned by the
runner's loop thread, and every delivery callback runs on that thread (in ``producer.poll``).
The order that matters:

1. the **serving record** of a promoted version (compacted models topic, key = model name);
2. once the broker has acknowledged it, the **result** (``reply_to`` or the output topic, key =
   request id) -- so whoever reads the result can count on every executor having been told;
3. once the result is acknowledged, ``on_done(partition, offset)`` marks the job's offset done.

Exactly-once (``executor.delivery = "exactly_once"``), a job's writes -- serving record and
result, or result and DLQ copy, or a dead letter -- are handed as one list to ``stage``
(:meth:`rayml.delivery.transactions.TransactionalOutput.stage`), which puts them into the
runner's open transaction in jobs-offset order, beside the jobs offsets they answer; the
serving record still comes first within it. A result for a ``reply_to`` goes outside the
transaction (:mod:`rayml.delivery.outside_writes` says why), acknowledged before its offset
commits. A write that fails aborts the transaction and the jobs are redone; the runner
remembers a ``reply_to`` that refused a write (or whose writes timed out 3 times), so the
redo answers on the output topic (each failure costs an abort).

Where a result goes, in both modes, is :class:`~rayml.training.replies.ReplyRoutes`'s answer:
its authorised ``reply_to`` if the broker has that topic (asked **before** the write), else the
output topic (the tenant's result topic). At-least-once, a write that ``produce()`` refuses at
once (librdkafka knows the topic is missing: ``_UNKNOWN_TOPIC``) is handled as a failed
delivery, reported on a later loop turn (:meth:`JobPublisher.serve_refused`), never raised
into the runner's loop.

Job **events** are fire-and-forget (advisory, at most once), outside any transaction: with
exactly-once they go through a plain producer of their own, so ``succeeded`` may be read before
the result it announces is committed. A failed job also gets a copy of its original request on
the DLQ, with headers naming the error and where it came from, so it can be replayed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from rayml.config import Settings
from rayml.delivery.out_records import OutRecord, Stage
from rayml.kafka.partitions import TP
from rayml.kafka.records import Headers
from rayml.kafka.topic_checks import topic_verdicts
from rayml.models.promotion import encode_serving
from rayml.protocol.envelopes import (
    DeadLetter,
    ErrorInfo,
    ModelRef,
    Request,
    Result,
    Timings,
    dead_letter_headers,
    encode_result,
)
from rayml.protocol.training import JobEvent, JobState, encode_event, now_ms
from rayml.training.gate import PromotionGate, Verdict
from rayml.training.plan import Job, result_payload
from rayml.training.replies import METADATA_TIMEOUT_S, ReplyRoutes
from rayml.training.serving import ServingState
from rayml.training.task import TrialOutcome

logger = logging.getLogger(__name__)

__all__ = ["Ack", "JobPublisher"]

#: A delivery callback: ``(error or None, message)``; the message is None for a write that
#: ``produce()`` refused before queueing it.
Ack = Callable[[KafkaError | None, Message | None], None]

#: A write refused by ``produce()`` is reported as failed this long after (a missing output
#: topic would otherwise be retried in a tight loop).
REFUSED_RETRY_S = 1.0


class JobPublisher:
    """Produces a runner's output. Use from the runner's loop thread only.

    Args:
        settings: Topics to write to.
        producer: The runner's idempotent producer, or its transactional one (with ``stage``).
        runner_id: For logs.
        on_done: At-least-once: called with a job's (partition, offset) once its answer is
            acknowledged.
        stage: Exactly-once: takes a job's writes instead of producing them.
        events: The producer for job events (default ``producer``; a plain one with
            exactly-once, since a transactional producer writes only inside transactions).
        gate: The promotion gate (default: one over a :class:`ServingState` that follows the
            models topic from now on).
        routes: Where results go (default: asked of ``producer``'s broker; the runner shares
            one among its tenants' publishers).
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        settings: Settings,
        producer: Any,
        runner_id: str,
        *,
        on_done: Callable[[TP, int], None],
        stage: Stage | None = None,
        events: Any | None = None,
        gate: PromotionGate | None = None,
        routes: ReplyRoutes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = settings.topics
        # Started here, not at the first answer: it has read the topic by the time a job ends.
        self.gate = gate or PromotionGate(
            settings, ServingState(settings.kafka, settings.topics.models)
        )
        self.producer = producer
        self.events = events if events is not None else producer
        self.runner_id = runner_id
        self._on_done = on_done
        self._stage = stage
        self.routes = routes or ReplyRoutes(
            partial(topic_verdicts, producer, timeout_s=METADATA_TIMEOUT_S),
            {self.topics.output, self.topics.dlq, self.topics.models, self.topics.events},
            runner_id,
        )
        # At-least-once: writes produce() refused, reported as failed deliveries once due.
        self._refused: deque[tuple[float, Ack, KafkaError]] = deque()
        self._clock = clock

    def answer_ok(self, job: Job, outcome: TrialOutcome, extra: dict[str, Any]) -> None:
        """Judge ``outcome``'s version; write its serving record if it is promoted, then the
        ok result (saying whether it was, and why).

        At-least-once the result waits for the serving record's acknowledgement; exactly-once
        both go into the transaction together, the record first.

        Args:
            job: The job answered.
            outcome: The version it produced (a sweep's copy of its best trial).
            extra: The version's ``extra`` metadata; ``promoted_from`` and ``sweep`` are used.
        """
        spec = job.spec
        verdict = self.gate.judge(
            spec, outcome, job.request.id, extra.get("promoted_from"), reused=job.reused
        )
        logger.info(
            "runner=%s job=%s model=%s version=%s promoted=%s: %s",
            self.runner_id,
            job.request.id,
            spec.model,
            outcome.version,
            verdict.promoted,
            verdict.reason,
        )
        output = result_payload(spec, outcome, extra.get("sweep"), job.reused or outcome.reused)
        output["promoted"] = verdict.promoted
        output["promotion"] = verdict.reason
        if verdict.record is None:
            result = self._result_ok(job, outcome, output)
            if self._stage is not None:
                self._stage(job.tp, job.offset, [self._result_record(job.request, result)])
            else:
                self.result(job.request, result, job.tp, job.offset)
            return
        served = OutRecord(
            self.topics.models, encode_serving(verdict.record), spec.model.encode(), None
        )
        if self._stage is not None:
            result = self._result_ok(job, outcome, output)
            self._stage(job.tp, job.offset, [served, self._result_record(job.request, result)])
            return

        def then_answer(err: KafkaError | None, _msg: Message | None) -> None:
            if err is not None:
                # Marked promoted in the store, but no executor was told: say so.
                logger.warning(
                    "runner=%s writing the serving record of model=%s version=%s failed: %s",
                    self.runner_id,
                    spec.model,
                    outcome.version,
                    err,
                )
                output["promoted"] = False
                output["promotion"] = _unannounced(verdict, self.topics.models, err)
            result = self._result_ok(job, outcome, output)
            self.result(job.request, result, job.tp, job.offset)

        self.produce(served.topic, served.value, served.key, None, on_ack=then_answer, retry=False)

    def _result_ok(self, job: Job, outcome: TrialOutcome, output: dict[str, Any]) -> Result:
        """The ok result of ``job`` (and its ``succeeded`` event)."""
        now = float(now_ms())
        started = job.started_ms if job.started_ms is not None else now
        result = Result.ok(
            job.request.id,
            job.spec.name,
            output,
            model=ModelRef(name=job.spec.model, version=outcome.version),
            timings=Timings(
                queued_ms=round(max(0.0, started - job.received_ms), 3),
                compute_ms=round(now - started, 3),
                total_ms=round(max(0.0, now - job.received_ms), 3),
            ),
            attempts=job.attempts,
            tenant=job.request.tenant,
        )
        self.event(job, "succeeded", version=outcome.version, metrics=outcome.metrics, progress=1.0)
        return result

    def answer_error(
        self,
        request: Request,
        job: Job | None,
        error: ErrorInfo,
        tp: TP,
        offset: int,
        *,
        dead_letter: tuple[bytes, Headers] | None = None,
    ) -> None:
        """Produce an error result for the jobs record at ``tp``/``offset``; with
        ``dead_letter`` (raw bytes and headers of the job), also a copy of the job on the DLQ for
        replay."""
        result = Result.failed(
            request.id,
            request.pipeline,
            error,
            attempts=job.attempts if job else 1,
            tenant=request.tenant,
        )
        if job is not None:
            # Only an accepted job has events: the events topic is read by every training
            # tenant, and a request refused at screening or authorisation (its tenant, its
            # pipeline, its reply_to, its params) is answered to its sender alone.
            self.event(job, "failed", error=error)
        letter: OutRecord | None = None
        if dead_letter is not None:
            raw, headers = dead_letter
            meta = DeadLetter(
                error_type=error.type,
                error_message=error.message,
                source_topic=tp[0],
                source_partition=tp[1],
                source_offset=offset,
                request_id=request.id,
            )
            letter = OutRecord(
                self.topics.dlq,
                raw,
                request.id.encode(),
                headers + list(dead_letter_headers(meta)),
            )
        if self._stage is not None:
            writes = [self._result_record(request, result)]
            self._stage(tp, offset, writes if letter is None else [*writes, letter])
            return
        self.result(request, result, tp, offset)
        if letter is not None:
            self.produce(letter.topic, letter.value, letter.key, letter.headers, on_ack=None)

    def result(self, request: Request | None, result: Result, tp: TP, offset: int) -> None:
        """Answer the jobs record at ``tp``/``offset`` with ``result``, on the request's
        ``reply_to`` (else the output topic)."""
        record = self._result_record(request, result)
        if self._stage is not None:
            self._stage(tp, offset, [record])
            return
        output = self.topics.output
        self.produce(
            record.topic,
            record.value,
            record.key,
            None,
            on_ack=self._ack(tp, offset),
            fallback_topic=output if record.topic != output else None,
        )

    def dead_letter(
        self, tp: TP, offset: int, value: bytes, key: bytes | None, headers: Headers
    ) -> None:
        """Write a jobs record that cannot be read as a request to the DLQ (its only answer)."""
        if self._stage is not None:
            self._stage(tp, offset, [OutRecord(self.topics.dlq, value, key, headers)])
            return
        self.produce(self.topics.dlq, value, key, headers, on_ack=self._ack(tp, offset))

    def _result_record(self, request: Request | None, result: Result) -> OutRecord:
        reply_to = request.reply_to if request else None
        topic = self.routes.topic_for(reply_to, self.topics.output)
        return OutRecord(topic, encode_result(result), result.id.encode(), None)

    def note_failed_delivery(self, topic: str, key: bytes | None, err: KafkaError) -> None:
        """Exactly-once: learn from a write that failed in an (aborted) transaction, so that
        the redo answers a ``reply_to`` that cannot be written on the output topic instead.

        An error that blames the topic decides at once; a timeout makes the topic suspect, and
        the runner asks the broker about it before the redo (:meth:`ReplyRoutes.settle`);
        anything else (a broker away) is redone as it was.
        """
        self.routes.learn(topic, err)

    def _ack(self, tp: TP, offset: int) -> Ack:
        def acked(_err: KafkaError | None, _msg: Message | None) -> None:
            self._on_done(tp, offset)

        return acked

    def event(self, job: Job, state: JobState, **fields: Any) -> None:
        """Publish a job event about ``job`` (fire-and-forget)."""
        fields.setdefault("trials", len(job.trials))
        self.event_for(job.request.id, job.spec.name, job.spec.model, state, **fields)

    def event_for(
        self, job_id: str, pipeline: str, model: str, state: JobState, **fields: Any
    ) -> None:
        """Publish a job event (fire-and-forget: never tracked, never retried)."""
        event = JobEvent(job_id=job_id, pipeline=pipeline, model=model, state=state, **fields)
        # KafkaException: the events topic is missing or refused the record; events are
        # advisory, and must never stop the loop.
        with contextlib.suppress(BufferError, KafkaException):
            self.events.produce(self.topics.events, key=job_id.encode(), value=encode_event(event))

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers | None,
        *,
        on_ack: Ack | None,
        retry: bool = True,
        fallback_topic: str | None = None,
    ) -> None:
        """Produce one record; on a delivery failure, retry (or use ``fallback_topic``).

        ``on_ack`` runs once the record is acknowledged -- or, with ``retry=False``, once it
        has failed for good.
        """

        def delivered(err: KafkaError | None, msg: Message | None) -> None:
            if err is not None and fallback_topic is not None and not err.retriable():
                # e.g. a reply_to topic that does not exist: answer on the output topic (and
                # send later results there at once, if the error blames the topic).
                logger.warning("runner=%s cannot write to %s (%s)", self.runner_id, topic, err)
                # (A timeout: at-least-once's 5 minutes say the broker was away; not asked.)
                self.routes.learn(topic, err, suspect_timeouts=False)
                self.produce(fallback_topic, value, key, headers, on_ack=on_ack)
            elif err is not None and retry:
                logger.warning(
                    "runner=%s delivery to %s failed (%s); retrying", self.runner_id, topic, err
                )
                self.produce(
                    topic, value, key, headers, on_ack=on_ack, fallback_topic=fallback_topic
                )
            elif on_ack is not None:
                on_ack(err, msg)

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
                # Refused before it was queued (a topic librdkafka knows to be missing:
                # _UNKNOWN_TOPIC; a record too large): a failed delivery, reported on a later
                # loop turn (serve_refused), so a retry cannot recurse or spin.
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                err = err or KafkaError(KafkaError._FAIL, str(exc))
                self._refused.append((self._clock() + REFUSED_RETRY_S, delivered, err))
                return

    def serve_refused(self) -> int:
        """Report the writes ``produce()`` refused whose time has come as failed deliveries
        (retried, sent to the fallback topic, or acknowledged as failed, as a failed delivery
        is); how many. The runner calls it every loop turn."""
        now = self._clock()
        served = 0
        # Only those refused before this call: a retry refused again waits for a later one.
        for _ in range(len(self._refused)):
            if self._refused[0][0] > now:
                break
            _due, delivered, err = self._refused.popleft()
            delivered(err, None)
            served += 1
        return served


def _unannounced(verdict: Verdict, topic: str, err: KafkaError) -> str:
    return (
        f"{verdict.reason}; but writing its serving record to {topic} failed ({err.str()}): "
        f"not served (`rayml models promote` serves it)"
    )
