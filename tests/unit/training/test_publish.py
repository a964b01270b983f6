"""What the job runner writes for a job, at-least-once and exactly-once (fakes, no Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from sklearn.linear_model import LogisticRegression

from rayml.config import Settings
from rayml.delivery.out_records import OutRecord
from rayml.kafka.partitions import TP
from rayml.models.promotion import ServingRecord, decode_serving
from rayml.models.store import ModelStore
from rayml.pipeline import Registry
from rayml.protocol.envelopes import ErrorInfo, Request, decode_result
from rayml.protocol.training import decode_announcement, decode_event
from rayml.training.gate import PromotionGate
from rayml.training.plan import Job, Trial
from rayml.training.publish import REFUSED_RETRY_S, JobPublisher
from rayml.training.replies import ReplyRoutes
from rayml.training.task import TrialOutcome, outcome_of
from tests.support.fake_serving import FakeServing
from tests.support.training_pipelines import FastParams

TP0: TP = ("jobs", 0)
TOPICS = {"output": "out", "models": "models", "dlq": "dlq", "events": "ev"}
FAILED = ErrorInfo(type="pipeline_failed", message="it raised")


class FakeProducer:
    """Keeps what is produced; acknowledges every write at the next poll() (with ``fail``,
    the writes to that topic fail; ``refuse`` topics are refused by produce() itself, as
    librdkafka refuses a topic it knows to be missing)."""

    def __init__(self, fail: str | None = None, refuse: set[str] | None = None) -> None:
        self.produced: list[tuple[str, bytes, bytes | None]] = []
        self._acks: list[tuple[str, Any]] = []
        self.fail = fail
        self.refuse = refuse or set()
        self.refused: list[str] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **kw: Any) -> None:
        if topic in self.refuse:
            self.refused.append(topic)
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, "Unknown topic"))
        self.produced.append((topic, value, key))
        if kw.get("on_delivery") is not None:
            self._acks.append((topic, kw["on_delivery"]))

    def poll(self, _timeout: float) -> int:
        acks, self._acks = self._acks, []
        for topic, ack in acks:
            err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED) if topic == self.fail else None
            ack(err, None)
        return len(acks)


def job(reply_to: str | None = None) -> Job:
    reg = Registry()
    reg.discover(["tests.support.training_pipelines"], entry_points=False)
    spec = reg.get("testing.train_fast")
    request = Request(id="job-1", pipeline=spec.name, reply_to=reply_to)
    return Job(TP0, 7, b'{"raw": 1}', [], request, spec, [Trial(0, FastParams())], False, 0.0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topics=TOPICS, models={"root": str(tmp_path)})


def stored(settings: Settings, accuracy: float, job_id: str | None = "job-1") -> TrialOutcome:
    """A version as a job stores it (``job_id=None``: one saved by hand), as an outcome."""
    est = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    extra = {"job_id": job_id, "role": "model"} if job_id else {}
    version = ModelStore(settings.models.root).save(
        "testing_fast", est, pipeline="p", params={}, metrics={"accuracy": accuracy}, extra=extra
    )
    return outcome_of(version, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Broker:
    """What the broker says about topics (topic_verdicts' answer); counts the questions."""

    def __init__(self, *topics: str) -> None:
        self.topics = {"out", "models", "dlq", "ev", *topics}
        self.asked: list[str] = []

    def ask(self, names: list[str]) -> dict[str, str | None]:
        self.asked += names
        return {n: None if n in self.topics else "the broker has no such topic" for n in names}


def publisher(
    settings: Settings, producer: Any, serving: FakeServing, broker: Broker | None = None, **kw: Any
) -> JobPublisher:
    return JobPublisher(
        settings,
        producer,
        "r1",
        on_done=kw.pop("on_done", lambda tp, offset: None),
        gate=PromotionGate(settings, serving, wait_s=0.0),
        routes=ReplyRoutes((broker or Broker("client-7")).ask, {"out"}),
        **kw,
    )


def test_exactly_once_stages_the_serving_record_then_the_result_and_produces_only_events(
    settings: Settings,
) -> None:
    staged: list[tuple[TP, int, list[OutRecord]]] = []
    done: list[tuple[TP, int]] = []
    results, events = FakeProducer(), FakeProducer()
    publish = publisher(
        settings,
        results,
        FakeServing(),
        on_done=lambda tp, offset: done.append((tp, offset)),
        stage=lambda tp, offset, records: staged.append((tp, offset, records)),
        events=events,
    )
    publish.answer_ok(job(), stored(settings, 0.9), {})
    ((tp, offset, records),) = staged
    assert (tp, offset) == (TP0, 7)
    assert [r.topic for r in records] == ["models", "out"]
    record = decode_serving(records[0].value)
    assert record is not None
    assert records[0].key == b"testing_fast"
    assert (record.name, record.version, record.action) == ("testing_fast", "000001", "trained")
    assert (record.job_id, record.metrics, record.previous) == ("job-1", {"accuracy": 0.9}, [])
    # Older readers of the models topic still read it as an announcement of the served version.
    announcement = decode_announcement(records[0].value)
    assert announcement is not None
    assert announcement.version == "000001"
    result = decode_result(records[1].value)
    assert (records[1].key, result.status, result.result["version"]) == (b"job-1", "ok", "000001")
    assert result.result["promoted"] is True
    assert result.result["promotion"] == "the first version of the model: nothing to compare"
    # Nothing went through the transactional producer; the event went through the plain one.
    assert results.produced == []
    assert [decode_event(v).state for _t, v, _k in events.produced] == ["succeeded"]
    assert done == []  # exactly-once: done when the transaction commits, not here


def test_exactly_once_a_failed_job_stages_its_result_and_its_dlq_copy_together(
    settings: Settings,
) -> None:
    staged: list[tuple[TP, int, list[OutRecord]]] = []
    publish = publisher(
        settings,
        FakeProducer(),
        FakeServing(),
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


def test_exactly_once_a_reply_to_that_failed_in_a_transaction_is_answered_on_the_output(
    settings: Settings,
) -> None:
    staged: list[list[OutRecord]] = []
    publish = publisher(
        settings,
        FakeProducer(),
        FakeServing(),
        stage=lambda tp, offset, records: staged.append(records),
        events=FakeProducer(),
    )
    outcome = stored(settings, 0.9)
    publish.answer_ok(job(reply_to="client-7"), outcome, {})
    publish.note_failed_delivery("client-7", b"job-1", KafkaError(KafkaError._MSG_TIMED_OUT))
    publish.answer_ok(job(reply_to="client-7"), outcome, {})  # a timeout blames no topic
    publish.note_failed_delivery("client-7", b"job-1", KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    publish.answer_ok(job(reply_to="client-7"), outcome, {})  # the redo
    assert [records[1].topic for records in staged] == ["client-7", "client-7", "out"]
    # Each redo is judged again and stages the same serving record (an aborted one is lost).
    records = [decode_serving(staged_records[0].value) for staged_records in staged]
    assert [(r.version, r.previous) for r in records if r is not None] == [("000001", [])] * 3


def test_at_least_once_the_result_follows_the_serving_records_ack_and_marks_the_offset_done(
    settings: Settings,
) -> None:
    done: list[tuple[TP, int]] = []
    producer = FakeProducer()
    publish = publisher(
        settings, producer, FakeServing(), on_done=lambda tp, offset: done.append((tp, offset))
    )
    publish.answer_ok(job(), stored(settings, 0.9), {})
    assert [t for t, _v, _k in producer.produced] == ["models"]
    producer.poll(0)  # the announcement is acknowledged: the event and the result go out
    assert [t for t, _v, _k in producer.produced] == ["models", "ev", "out"]
    assert done == []
    producer.poll(0)  # the result is acknowledged
    assert done == [(TP0, 7)]


def test_a_worse_version_is_stored_not_served_and_the_result_says_why(settings: Settings) -> None:
    good = stored(settings, 0.95)
    serving = FakeServing(
        ServingRecord(name="testing_fast", version=good.version, metrics={"accuracy": 0.95})
    )
    producer = FakeProducer()
    publish = publisher(settings, producer, serving)
    worse = stored(settings, 0.5)
    publish.answer_ok(job(), worse, {})
    assert [t for t, _v, _k in producer.produced] == ["ev", "out"]  # no serving record
    result = decode_result(producer.produced[-1][1])
    assert result.status == "ok"
    assert result.model is not None
    assert result.model.version == worse.version == "000002"
    assert result.result["promoted"] is False
    assert result.result["promotion"] == (
        "metric accuracy 0.5 < 0.95 of served version 000001: stored, not served"
    )
    assert ModelStore(settings.models.root).promotion("testing_fast", worse.version) is None


def test_a_better_version_is_served_and_the_one_before_is_kept_for_rollback(
    settings: Settings,
) -> None:
    hand = stored(settings, 0.9, job_id=None)  # served by the store alone: no record yet
    producer = FakeProducer()
    publish = publisher(settings, producer, FakeServing())
    better = stored(settings, 0.9)  # no worse: served
    publish.answer_ok(job(), better, {})
    record = decode_serving(producer.produced[0][1])
    assert record is not None
    assert (record.version, record.previous) == (better.version, [hand.version])
    assert record.reason == "metric accuracy 0.9 >= 0.9 of served version 000001"
    assert ModelStore(settings.models.root).promotion("testing_fast", better.version) is not None


def test_at_least_once_a_serving_record_the_broker_refuses_is_not_served(
    settings: Settings,
) -> None:
    producer = FakeProducer(fail="models")
    publish = publisher(settings, producer, FakeServing())
    publish.answer_ok(job(), stored(settings, 0.9), {})
    producer.poll(0)
    result = decode_result(producer.produced[-1][1])
    assert producer.produced[-1][0] == "out"
    assert result.result["promoted"] is False
    assert result.result["promotion"].startswith(
        "the first version of the model: nothing to compare; but writing its serving record to "
        "models failed"
    )


def test_a_reply_to_the_broker_does_not_have_is_answered_on_the_output_never_written(
    settings: Settings,
) -> None:
    """Asked before writing, in both modes: no 30 s wait in librdkafka, no aborted transaction
    (exactly-once), no produce() refusal (at-least-once)."""
    broker = Broker()  # no "bogus-7"
    staged: list[list[OutRecord]] = []
    exactly_once = publisher(
        settings,
        FakeProducer(),
        FakeServing(),
        broker,
        stage=lambda tp, offset, records: staged.append(records),
        events=FakeProducer(),
    )
    exactly_once.answer_error(job("bogus-7").request, job("bogus-7"), FAILED, TP0, 7)
    assert [r.topic for r in staged[0]] == ["out"]
    producer = FakeProducer()
    at_least_once = publisher(settings, producer, FakeServing(), broker)
    at_least_once.answer_error(job("bogus-7").request, None, FAILED, TP0, 7)
    assert [t for t, _v, _k in producer.produced] == ["out"]
    assert broker.asked == ["bogus-7", "bogus-7"]  # each publisher asked once (shared: once)


def test_at_least_once_a_write_produce_refuses_is_a_failed_delivery_not_a_crash(
    settings: Settings,
) -> None:
    """librdkafka, once it knows a topic is missing, refuses the write in produce() itself
    (``_UNKNOWN_TOPIC``): the reply_to's result goes to the output topic a turn later."""
    done: list[tuple[TP, int]] = []
    clock = Clock()
    producer = FakeProducer(refuse={"client-7"})
    publish = publisher(
        settings,
        producer,
        FakeServing(),
        on_done=lambda tp, offset: done.append((tp, offset)),
        clock=clock,
    )
    publish.answer_error(job("client-7").request, None, FAILED, TP0, 7)
    assert producer.refused == ["client-7"]
    assert publish.serve_refused() == 0  # reported on a later turn, not re-entered
    clock.now += REFUSED_RETRY_S
    assert publish.serve_refused() == 1
    assert [t for t, _v, _k in producer.produced] == ["out"]
    producer.poll(0)
    assert done == [(TP0, 7)]
    # Learnt: the next result goes to the output topic at once.
    publish.answer_error(job("client-7").request, None, FAILED, TP0, 8)
    assert producer.refused == ["client-7"]
    assert producer.produced[-1][0] == "out"


def test_at_least_once_a_refused_output_topic_is_retried_a_second_later_without_spinning(
    settings: Settings,
) -> None:
    clock = Clock()
    producer = FakeProducer(refuse={"out"})
    publish = publisher(settings, producer, FakeServing(), clock=clock)
    publish.answer_error(job().request, None, FAILED, TP0, 7)
    assert producer.refused == ["out"]
    # Each refusal is retried once per REFUSED_RETRY_S, never in a tight loop.
    for tries in (2, 3):
        clock.now += REFUSED_RETRY_S * 0.9
        assert publish.serve_refused() == 0
        clock.now += REFUSED_RETRY_S * 0.1
        assert publish.serve_refused() == 1
        assert producer.refused == ["out"] * tries
    producer.refuse.clear()  # the topic was created
    clock.now += REFUSED_RETRY_S
    assert publish.serve_refused() == 1
    assert producer.produced[-1][0] == "out"
    assert publish.serve_refused() == 0


def test_a_request_refused_before_it_is_a_job_has_no_event_only_its_result(
    settings: Settings,
) -> None:
    """The events topic is read by every training tenant: a refused request (its tenant, its
    pipeline, its reply_to) is answered to its sender and published nowhere else."""
    producer = FakeProducer()
    publish = publisher(settings, producer, FakeServing())
    refused = ErrorInfo(type="tenant_refused", message="tenant team-b may not train iris.train")
    publish.answer_error(job("client-7").request, None, refused, TP0, 7)
    assert [t for t, _v, _k in producer.produced] == ["client-7"]
    assert decode_result(producer.produced[0][1]).error == refused


def test_an_events_topic_that_refuses_writes_costs_the_event_only(settings: Settings) -> None:
    producer = FakeProducer(refuse={"ev"})
    publish = publisher(settings, producer, FakeServing())
    publish.answer_error(job().request, job(), FAILED, TP0, 7)
    assert producer.refused == ["ev"]
    assert [t for t, _v, _k in producer.produced] == ["out"]
