"""What the job runner writes for a job, at-least-once and exactly-once (fakes, no Kafka)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from rayml.config import Settings
from rayml.delivery.out_records import OutRecord
from rayml.kafka.partitions import TP
from rayml.pipeline import Registry
from rayml.protocol.envelopes import ErrorInfo, Request, decode_result
from rayml.protocol.training import decode_announcement, decode_event
from rayml.training.plan import Job, Trial
from rayml.training.publish import JobPublisher
from rayml.training.task import TrialOutcome
from tests.support.training_pipelines import FastParams

SETTINGS = Settings(topics={"output": "out", "models": "models", "dlq": "dlq", "events": "ev"})
TP0: TP = ("jobs", 0)


class FakeProducer:
    """Keeps what is produced; acknowledges every write at the next poll()."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, bytes | None]] = []
        self._acks: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **kw: Any) -> None:
        self.produced.append((topic, value, key))
        if kw.get("on_delivery") is not None:
            self._acks.append(kw["on_delivery"])

    def poll(self, _timeout: float) -> int:
        acks, self._acks = self._acks, []
        for ack in acks:
            ack(None, None)
        return len(acks)


def job(reply_to: str | None = None) -> Job:
    reg = Registry()
    reg.discover(["tests.support.training_pipelines"], entry_points=False)
    spec = reg.get("testing.train_fast")
    request = Request(id="job-1", pipeline=spec.name, reply_to=reply_to)
    return Job(TP0, 7, b'{"raw": 1}', [], request, spec, [Trial(0, FastParams())], False, 0.0)


OUTCOME = TrialOutcome(0, "000004", {"accuracy": 0.9}, {"c": 1.0})


def test_exactly_once_stages_the_announcement_then_the_result_and_produces_only_events() -> None:
    staged: list[tuple[TP, int, list[OutRecord]]] = []
    done: list[tuple[TP, int]] = []
    results, events = FakeProducer(), FakeProducer()
    publish = JobPublisher(
        SETTINGS,
        results,
        "r1",
        on_done=lambda tp, offset: done.append((tp, offset)),
        stage=lambda tp, offset, records: staged.append((tp, offset, records)),
        events=events,
    )
    publish.answer_ok(job(), OUTCOME, {})
    ((tp, offset, records),) = staged
    assert (tp, offset) == (TP0, 7)
    assert [r.topic for r in records] == ["models", "out"]
    announcement = decode_announcement(records[0].value)
    assert announcement is not None
    assert (announcement.name, announcement.version) == ("testing_fast", "000004")
    result = decode_result(records[1].value)
    assert (records[1].key, result.status, result.result["version"]) == (b"job-1", "ok", "000004")
    # Nothing went through the transactional producer; the event went through the plain one.
    assert results.produced == []
    assert [decode_event(v).state for _t, v, _k in events.produced] == ["succeeded"]
    assert done == []  # exactly-once: done when the transaction commits, not here


def test_exactly_once_a_failed_job_stages_its_result_and_its_dlq_copy_together() -> None:
    staged: list[tuple[TP, int, list[OutRecord]]] = []
    publish = JobPublisher(
        SETTINGS,
        FakeProducer(),
        "r1",
        on_done=lambda tp, offset: None,
        stage=lambda tp, offset, records: staged.append((tp, offset, records)),
        events=FakeProducer(),
    )
    error = ErrorInfo(type="trial_timeout", message="ran past its 2s time bound")
    j = job()
    publish.answer_error(j.request, j, error, TP0, 7, dead_letter=(j.raw, []))
    ((_tp, _offset, (result, letter)),) = staged
    assert (result.topic, decode_result(result.value).error.type) == ("out", "trial_timeout")  # type: ignore[union-attr]
    assert (letter.topic, letter.value, letter.key) == ("dlq", b'{"raw": 1}', b"job-1")
    assert dict(letter.headers or [])["rayml.error.type"] == b"trial_timeout"


def test_exactly_once_a_reply_to_that_failed_in_a_transaction_is_answered_on_the_output() -> None:
    staged: list[list[OutRecord]] = []
    publish = JobPublisher(
        SETTINGS,
        FakeProducer(),
        "r1",
        on_done=lambda tp, offset: None,
        stage=lambda tp, offset, records: staged.append(records),
        events=FakeProducer(),
    )
    publish.answer_ok(job(reply_to="client-7"), OUTCOME, {})
    publish.note_failed_delivery("client-7", b"job-1", KafkaError(KafkaError._MSG_TIMED_OUT))
    publish.answer_ok(job(reply_to="client-7"), OUTCOME, {})  # a timeout blames no topic
    publish.note_failed_delivery("client-7", b"job-1", KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    publish.answer_ok(job(reply_to="client-7"), OUTCOME, {})  # the redo
    assert [records[1].topic for records in staged] == ["client-7", "client-7", "out"]


def test_at_least_once_the_result_follows_the_announcements_ack_and_marks_the_offset_done() -> None:
    done: list[tuple[TP, int]] = []
    producer = FakeProducer()
    publish = JobPublisher(
        SETTINGS, producer, "r1", on_done=lambda tp, offset: done.append((tp, offset))
    )
    publish.answer_ok(job(), OUTCOME, {})
    assert [t for t, _v, _k in producer.produced] == ["models"]
    producer.poll(0)  # the announcement is acknowledged: the event and the result go out
    assert [t for t, _v, _k in producer.produced] == ["models", "ev", "out"]
    assert done == []
    producer.poll(0)  # the result is acknowledged
    assert done == [(TP0, 7)]
