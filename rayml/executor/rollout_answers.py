"""What each version answered while its model is under rollout, written to the shadow topic.

For every request of a model under rollout (docs/rollouts.md), the ingest writes one
:class:`~rayml.protocol.rollouts.VersionAnswer` per version that ran it: the serving version's or
the canary's answer as its caller got it, and the shadow's, which no caller sees. The rollout
monitor (:mod:`rayml.rollouts.monitor`) joins them with ground truth from the feedback topic.

Above ``rollout.monitor_max_answers_per_s`` records a second, only the answers of a sample of
request ids are written (by :func:`~rayml.protocol.rollouts.sample_share`, as the monitor reads
them), re-sized every second, and a shadow runs on that sample only: a busy model under rollout
then costs the ingest a hash per request, not a record.

These records are figures, not results: they go through a producer of their own (never the
ingest's transactional one), outside the offset bookkeeping, and a write that cannot be queued
(librdkafka's queue full) is dropped and counted rather than waited for. So a rollout never
slows or blocks the callers' path; a crash may lose a few of these records, which only thins
the figures. Requests of models not under rollout cost nothing here.

The serving version's and the canary's answers also carry the request's input vector
(``inputs``, :func:`~rayml.protocol.rollouts.input_vector`: the one list of numbers in its
params, at most 256 long) for the monitor's drift figures; a check of the params' top-level
fields, bounded, and only for requests under rollout.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rayml.config import Settings
from rayml.executor.work import BatchOutcome, InFlight, ItemError, Pending
from rayml.kafka import clients as kafka_clients
from rayml.protocol.rollouts import input_vector, sample_share

logger = logging.getLogger(__name__)

__all__ = ["RolloutAnswers"]

_SAMPLE_EVERY_S = 1.0  # re-sized every second: a burst is sampled within one


class RolloutAnswers:
    """Writes :class:`~rayml.protocol.rollouts.VersionAnswer` records (loop thread only)."""

    def __init__(self, settings: Settings, owner: str) -> None:
        self.topic = settings.topics.shadow
        self._kafka = settings.kafka
        self._owner = owner
        self._producer: Producer | None = None  # made at the first rollout answer
        self.written = 0
        self.dropped = 0  # not queued: librdkafka's queue was full
        self.failed = 0  # not delivered
        self.max_per_s = settings.rollout.monitor_max_answers_per_s
        self.sample = 1.0  # the share of request ids whose answers are written
        self.sampled_out = 0
        self._seen = 0
        self._since = time.monotonic()

    def kept(self, request_id: str) -> bool:
        """Whether ``request_id`` is in the sample whose answers (and shadow) are written."""
        return self.sample >= 1.0 or sample_share(request_id.encode()) < self.sample

    def answered(self, batch: InFlight, outcome: BatchOutcome) -> None:
        """A batch of callers' requests came back: the answers of those under rollout."""
        items = batch.items
        if items and any(item.role is not None for item in items):
            self._write(batch, outcome, None)

    def shadowed(self, batch: InFlight, outcome: BatchOutcome) -> None:
        """A shadow batch came back: what the candidate would have answered."""
        self._write(batch, outcome, "shadow")

    def exhausted(self, items: list[Pending], versions: Any) -> None:
        """Requests under rollout that used up their attempts: an error answer each, for the
        version that was to answer it (the canary's candidate, or the served version)."""
        by_version: dict[tuple[str, str, str], list[Pending]] = {}
        for item in items:
            if item.role is None:
                continue
            model = item.spec.model
            rollout = versions.rollouts.get(model)
            if item.role == "canary" and rollout is not None:
                version = rollout.candidate
            else:
                version = versions.get(model)
            if version is None:
                continue
            by_version.setdefault((model, version, item.role), []).append(item)
        failed = ItemError("retries_exhausted", "the request used up its attempts")
        for (model, version, _role), group in by_version.items():
            batch = InFlight(("", model, version), group, "", 0.0)
            self._write(batch, BatchOutcome(model, version, [failed] * len(group), 0.0, ""), None)

    def poll(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)
        elapsed = time.monotonic() - self._since
        if elapsed >= _SAMPLE_EVERY_S:
            rate = self._seen / elapsed
            self.sample = 1.0 if rate <= self.max_per_s else self.max_per_s / rate
            self._seen = 0
            self._since = time.monotonic()

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer is not None:
            left = self._producer.flush(timeout_s)
            if left:
                logger.warning(
                    "ingest=%s %d rollout answers not written to %s at stop",
                    self._owner,
                    left,
                    self.topic,
                )

    def _write(self, batch: InFlight, outcome: BatchOutcome, role: str | None) -> None:
        producer = self._producer
        if producer is None:
            producer = self._producer = kafka_clients.producer(
                self._kafka, **{"client.id": f"rayml-rollout-{self._owner}", "linger.ms": 20}
            )
        at_ms = int(time.time() * 1000)
        # None for answers no batch computed (failures): no compute time to count.
        compute_ms = round(outcome.compute_ms, 3) if outcome.compute_ms > 0 else None
        for item, output in zip(batch.items, outcome.outputs, strict=True):
            side = role or item.role
            if side is None:
                continue
            request = item.request
            self._seen += 1
            if self.sample < 1.0 and sample_share(request.id.encode()) >= self.sample:
                self.sampled_out += 1
                continue
            doc: dict[str, Any] = {
                "v": 1,
                "id": request.id,
                "model": outcome.model_name,
                "version": outcome.model_version,
                "role": side,
                "pipeline": request.pipeline,
                "compute_ms": compute_ms,
                "at_ms": at_ms,
            }
            if role is None:
                # The input vector, for drift figures (docs/rollouts.md, "Drift"); a shadow's
                # request is the served version's, whose answer carries it already.
                inputs = input_vector(request.params)
                if inputs is not None:
                    doc["inputs"] = inputs
            if isinstance(output, ItemError):
                doc["status"] = "error"
                doc["error_type"] = output.type
            else:
                doc["status"] = "ok"
                doc["output"] = output
            try:
                value = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
            except TypeError:
                doc.pop("output", None)
                doc["status"] = "error"
                doc["error_type"] = "invalid_output"
                value = orjson.dumps(doc)
            try:
                producer.produce(
                    self.topic, value=value, key=request.id.encode(), on_delivery=self._delivered
                )
            except BufferError:
                self.dropped += 1
            except KafkaException as exc:  # refused before it was queued (too large...)
                self._delivered(exc.args[0] if exc.args else None, None)
            else:
                self.written += 1

    def _delivered(self, err: KafkaError | None, _msg: Message | None) -> None:
        if err is not None:
            if not isinstance(err, KafkaError):
                err = KafkaError(KafkaError._FAIL, str(err))
            self.failed += 1
            if self.failed in (1, 10, 100) or self.failed % 1000 == 0:
                logger.warning(
                    "ingest=%s rollout answers not delivered to %s (%d so far): %s",
                    self._owner,
                    self.topic,
                    self.failed,
                    err.str(),
                )
