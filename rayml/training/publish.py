"""What the job runner writes to Kafka: announcements, results, job events, dead letters.

All of it goes through one idempotent producer owned by the runner's loop thread, and every
delivery callback runs on that thread (in ``producer.poll``). The order that matters:

1. the **announcement** of a new version (compacted models topic, key = model name);
2. once the broker has acknowledged it, the **result** (``reply_to`` or the output topic, key =
   request id) -- so whoever reads the result can count on every executor having been told;
3. once the result is acknowledged, the caller's ``on_done`` marks the job's offset done.

Job **events** are fire-and-forget (advisory, at most once). A failed job also gets a copy of
its original request on the DLQ, with headers naming the error and where it came from, so it
can be replayed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from rayml.config import Settings
from rayml.kafka.records import Headers
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
from rayml.protocol.training import (
    JobEvent,
    JobState,
    ModelAnnouncement,
    encode_announcement,
    encode_event,
    now_ms,
)
from rayml.training.plan import Job, result_payload
from rayml.training.task import TrialOutcome

logger = logging.getLogger(__name__)

__all__ = ["Ack", "JobPublisher"]

#: A delivery callback: ``(error or None, message)``.
Ack = Callable[[KafkaError | None, Message], None]


class JobPublisher:
    """Produces a runner's output. Use from the runner's loop thread only.

    Args:
        settings: Topics to write to.
        producer: The runner's idempotent producer.
        runner_id: For logs.
    """

    def __init__(self, settings: Settings, producer: Any, runner_id: str) -> None:
        self.topics = settings.topics
        self.producer = producer
        self.runner_id = runner_id

    def answer_ok(
        self, job: Job, outcome: TrialOutcome, extra: dict[str, Any], on_done: Ack
    ) -> None:
        """Announce ``outcome``'s version, then (once acknowledged) produce the ok result.

        Args:
            job: The job answered.
            outcome: The servable version it produced (a sweep's promoted copy).
            extra: The version's ``extra`` metadata; ``promoted_from`` and ``sweep`` are used.
            on_done: Called when the result is acknowledged.
        """
        spec = job.spec
        announcement = ModelAnnouncement(
            name=spec.model,
            version=outcome.version,
            metrics=outcome.metrics,
            created_at=outcome.created_at,
            pipeline=spec.name,
            job_id=job.request.id,
            promoted_from=extra.get("promoted_from"),
        )
        output = result_payload(spec, outcome, extra.get("sweep"), job.reused or outcome.reused)

        def announced(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                # Executors still find the version in the store within their refresh period.
                logger.warning(
                    "runner=%s announcing model=%s version=%s failed: %s",
                    self.runner_id,
                    spec.model,
                    outcome.version,
                    err,
                )
            self._result_ok(job, outcome, output, on_done)

        self.produce(
            self.topics.models,
            encode_announcement(announcement),
            spec.model.encode(),
            None,
            on_ack=announced,
            retry=False,
        )

    def _result_ok(
        self, job: Job, outcome: TrialOutcome, output: dict[str, Any], on_done: Ack
    ) -> None:
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
        self.result(job.request, result, on_done)

    def answer_error(
        self,
        request: Request,
        job: Job | None,
        error: ErrorInfo,
        on_done: Ack,
        *,
        dead_letter: tuple[str, int, int, bytes, Headers] | None = None,
    ) -> None:
        """Produce an error result; with ``dead_letter`` (topic, partition, offset, raw bytes,
        headers of the job), also a copy of the job on the DLQ for replay."""
        result = Result.failed(
            request.id,
            request.pipeline,
            error,
            attempts=job.attempts if job else 1,
            tenant=request.tenant,
        )
        if job is not None:
            self.event(job, "failed", error=error)
        else:
            self.event_for(request.id, request.pipeline, "", "failed", error=error)
        self.result(request, result, on_done)
        if dead_letter is not None:
            topic, partition, offset, raw, headers = dead_letter
            letter = DeadLetter(
                error_type=error.type,
                error_message=error.message,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                request_id=request.id,
            )
            self.produce(
                self.topics.dlq,
                raw,
                request.id.encode(),
                headers + list(dead_letter_headers(letter)),
                on_ack=None,
            )

    def result(self, request: Request | None, result: Result, on_done: Ack) -> None:
        """Produce ``result`` to the request's ``reply_to`` (else the output topic)."""
        output = self.topics.output
        topic = (request.reply_to if request else None) or output
        self.produce(
            topic,
            encode_result(result),
            result.id.encode(),
            None,
            on_ack=on_done,
            fallback_topic=output if topic != output else None,
        )

    def event(self, job: Job, state: JobState, **fields: Any) -> None:
        """Publish a job event about ``job`` (fire-and-forget)."""
        fields.setdefault("trials", len(job.trials))
        self.event_for(job.request.id, job.spec.name, job.spec.model, state, **fields)

    def event_for(
        self, job_id: str, pipeline: str, model: str, state: JobState, **fields: Any
    ) -> None:
        """Publish a job event (fire-and-forget: never tracked, never retried)."""
        event = JobEvent(job_id=job_id, pipeline=pipeline, model=model, state=state, **fields)
        with contextlib.suppress(BufferError):
            self.producer.produce(
                self.topics.events, key=job_id.encode(), value=encode_event(event)
            )

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

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None and fallback_topic is not None and not err.retriable():
                # e.g. a reply_to topic that does not exist: answer on the output topic.
                logger.warning("runner=%s cannot write to %s (%s)", self.runner_id, topic, err)
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
