"""Reading what a rollout is judged on: the shadow topic (what each version answered), the
feedback topic (ground truth) and the models topic (the serving records, with their rollouts).

One consumer, assigned (no group: every reader reads everything), starting ``window_s`` back on
the shadow and feedback topics (``offsets_for_times``) and at the beginning of the compacted
models topic. The rollout monitor keeps reading (:class:`RolloutReader`); ``rayml rollout status``
reads once to the current end (:func:`read_window`), so both rebuild their figures from the
topics, never from one process's memory. Records that do not parse are skipped and counted.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
from pydantic import ValidationError

from rayml.config import Settings
from rayml.kafka import clients as kafka_clients
from rayml.models.promotion import ServingRecord, decode_serving
from rayml.protocol.rollouts import Feedback, VersionAnswer
from rayml.protocol.rollouts import sample_share as id_share
from rayml.rollouts.drift import DriftWindow
from rayml.rollouts.quality import QualityWindow

logger = logging.getLogger(__name__)

__all__ = ["Batch", "RolloutReader", "read_window"]


@dataclass
class Batch:
    """What one poll read."""

    answers: list[VersionAnswer] = field(default_factory=list)
    feedback: list[tuple[Feedback, int]] = field(default_factory=list)
    records: list[ServingRecord] = field(default_factory=list)


_SAMPLE_EVERY_S = 5.0


class RolloutReader:
    """The three topics, from ``since_ms`` (shadow, feedback) and the beginning (models).

    With ``max_answers_per_s``, it keeps only a sample of request ids once answer records come
    faster than that (re-sized every few seconds): a record whose id falls above the sample is
    skipped before it is parsed, so reading costs little however busy the model; answers and
    labels of one id are kept or skipped together. ``sample`` is the share kept now.
    """

    def __init__(
        self,
        settings: Settings,
        since_ms: int,
        timeout_s: float = 30.0,
        max_answers_per_s: float | None = None,
    ) -> None:
        self.max_answers_per_s = max_answers_per_s
        self.sample = 1.0
        self.sampled_out = 0  # records skipped by the sample
        self._seen = 0
        self._since = time.monotonic()
        t = settings.topics
        self.shadow, self.feedback, self.models = t.shadow, t.feedback, t.models
        self.consumer: Consumer = kafka_clients.consumer(
            settings.kafka,
            f"rayml-rollouts-{uuid.uuid4().hex[:12]}",
            **{"enable.auto.commit": False, "enable.partition.eof": False},
        )
        self.skipped = 0  # records that did not parse
        self.ends: dict[tuple[str, int], int] = {}  # each partition's end when assigned
        self._todo: set[tuple[str, int]] = set()
        assignment: list[TopicPartition] = []
        metadata = self.consumer.list_topics(timeout=timeout_s).topics
        for topic in (self.shadow, self.feedback, self.models):
            meta = metadata.get(topic)
            if meta is None or meta.error is not None:
                logger.warning("rollouts: topic %s is not there: not read", topic)
                continue
            parts = sorted(meta.partitions)
            if topic == self.models:
                starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
            else:
                asked = [TopicPartition(topic, p, since_ms) for p in parts]
                starts = [
                    tp if tp.offset >= 0 else TopicPartition(topic, tp.partition, OFFSET_END)
                    for tp in self.consumer.offsets_for_times(asked, timeout=timeout_s)
                ]
            assignment += starts
            for p in parts:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout_s
                )
                if high > low:
                    self.ends[(topic, p)] = high
        self.consumer.assign(assignment)
        # Partitions with records to read before the window is complete: not those whose
        # start is already their end (nothing in the window).
        self._todo = set()
        for tp in assignment:
            key = (tp.topic, tp.partition)
            end = self.ends.get(key)
            if end is None or tp.offset == OFFSET_END or 0 <= end <= tp.offset:
                continue
            self._todo.add(key)

    @property
    def caught_up(self) -> bool:
        """Every partition read up to where it ended when this reader started."""
        return not self._todo

    def poll(self, timeout_s: float) -> Batch:
        batch = Batch()
        for msg in self.consumer.consume(1000, timeout=timeout_s):
            if msg.error() is not None:
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if self._todo and topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                if key in self._todo and offset + 1 >= self.ends[key]:
                    self._todo.discard(key)
            value = msg.value()
            try:
                if topic == self.shadow:
                    self._seen += 1
                    rid = msg.key()
                    if self.sample < 1.0 and rid is not None and id_share(rid) >= self.sample:
                        self.sampled_out += 1
                        continue
                    batch.answers.append(VersionAnswer.model_validate_json(value or b""))
                elif topic == self.feedback:
                    _kind, ts = msg.timestamp()
                    feedback = Feedback.model_validate_json(value or b"")
                    if self.sample < 1.0 and id_share(feedback.id.encode()) >= self.sample:
                        self.sampled_out += 1
                        continue
                    batch.feedback.append((feedback, ts or int(time.time() * 1000)))
                else:
                    record = decode_serving(value)
                    if record is not None and msg.key() == record.name.encode():
                        batch.records.append(record)
            except ValidationError:
                self.skipped += 1
        self._resample()
        if self._todo:
            # Compaction or aborted transactions may have left the last offsets empty.
            for tp in self.consumer.position([TopicPartition(t, p) for t, p in list(self._todo)]):
                if tp.offset >= self.ends[(tp.topic, tp.partition)]:
                    self._todo.discard((tp.topic, tp.partition))
        return batch

    def _resample(self) -> None:
        budget = self.max_answers_per_s
        elapsed = time.monotonic() - self._since
        if budget is None or elapsed < _SAMPLE_EVERY_S:
            return
        rate = self._seen / elapsed
        self.sample = 1.0 if rate <= budget else budget / rate
        self._seen = 0
        self._since = time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def read_window(
    settings: Settings, timeout_s: float = 30.0, drift: DriftWindow | None = None
) -> tuple[QualityWindow, dict[str, ServingRecord]]:
    """The figures of the last ``rollout.window_s``, read once to the topics' current end,
    and every model's serving record; each answer also goes to ``drift``, if given.

    Raises:
        TimeoutError: The end was not reached within ``timeout_s``.
    """
    r = settings.rollout
    window = QualityWindow(r.window_s, r.max_tracked)
    records: dict[str, ServingRecord] = {}
    reader = RolloutReader(settings, int((time.time() - r.window_s) * 1000), timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            batch = reader.poll(0.2)
            for answer in batch.answers:
                window.add_answer(answer)
                if drift is not None:
                    drift.add_answer(answer)
            for feedback, at_ms in batch.feedback:
                window.add_feedback(feedback, at_ms)
            for record in batch.records:
                records[record.name] = record
            if reader.caught_up:
                return window, records
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not read the rollout topics to their end within {timeout_s:g}s"
                )
    finally:
        reader.close()
