"""ResultWriter without a broker: what it produces, and when a record counts as done."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rayml.delivery.reply_topics import ReplyTopics
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.sink import TopicTenant
from rayml.protocol.dead_letters import DeadLetter, dead_letter_from_headers
from rayml.protocol.envelopes import ErrorInfo, ModelRef, Request, Result, Timings, decode_result

# Requests from "in" are tenant team-a's; its result topic is "out". Those from "b.in" are
# team-b's, answered on "b.out".
TENANTS = {"in": TopicTenant("team-a", "out"), "b.in": TopicTenant("team-b", "b.out")}


class _Delivered:
    """Stands in for a confluent-kafka message in a delivery report."""


class FakeProducer:
    """Records produce calls; ``ack()`` runs the delivery callbacks as the broker would."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._callbacks: list[Any] = []

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any = None
    ) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        if on_delivery is not None:
            self._callbacks.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        return 0

    def ack(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(None, _Delivered())


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def writer_on(
    producer: FakeProducer, **options: Any
) -> tuple[ResultWriter, list[tuple[tuple[str, int], int]]]:
    done: list[tuple[tuple[str, int], int]] = []
    # Unless a test says otherwise, every reply_to existed when the writer asked (the tests
    # here are of what happens to writes that fail after that).
    options.setdefault("reply_topics", ReplyTopics(lambda names: dict.fromkeys(names)))
    w = ResultWriter(
        producer,  # type: ignore[arg-type]
        tenants=TENANTS,
        dlq_topic="dlq",
        on_done=lambda tp, offset: done.append((tp, offset)),
        owner="test",
        **options,
    )
    return w, done


def writer() -> tuple[ResultWriter, FakeProducer, list[tuple[tuple[str, int], int]]]:
    producer = FakeProducer()
    w, done = writer_on(producer)
    return w, producer, done


def test_fast_ok_path_writes_the_same_envelope_as_the_pydantic_path() -> None:
    w, producer, done = writer()
    request = Request(
        id="r-1", pipeline="p.predict", params={}, tenant="team-a", reply_to="team-a.replies"
    )
    output = {"label": np.int64(1), "probability": np.float32(0.75), "rows": np.arange(3)}
    model = {"name": "m", "version": "000002"}
    timings = {"queued_ms": 1.5, "compute_ms": 0.25, "total_ms": 3.0}
    w.answer_ok(("in", 0), 7, request, output, model=model, timings=timings, attempts=2)

    (sent,) = producer.sent
    assert sent["topic"] == "team-a.replies"
    assert sent["key"] == b"r-1"
    expected = Result.ok(
        "r-1",
        "p.predict",
        {"label": 1, "probability": 0.75, "rows": [0, 1, 2]},
        model=ModelRef(**model),
        timings=Timings(**timings),
        attempts=2,
        tenant="team-a",
    )
    assert decode_result(sent["value"]) == expected
    assert done == []
    producer.ack()
    assert done == [(("in", 0), 7)], "done only once the broker acknowledged"


def test_unencodable_output_becomes_an_error_result() -> None:
    w, producer, _ = writer()
    request = Request(id="r-2", pipeline="p", params={})
    w.answer_ok(
        ("in", 0), 1, request, {"x": object()}, model=None, timings={"total_ms": 1.0}, attempts=1
    )
    result = decode_result(producer.sent[0]["value"])
    assert result.status == "error"
    assert result.error is not None
    assert result.error.type == "invalid_output"


def test_exhausted_request_is_done_only_when_result_and_dead_letter_are_both_acked() -> None:
    w, producer, done = writer()
    request = Request(id="r-3", pipeline="p", params={})
    letter = DeadLetter(
        error_type="retries_exhausted",
        error_message="gave up",
        source_topic="in",
        source_partition=2,
        source_offset=9,
        request_id="r-3",
    )
    w.answer(
        ("in", 2),
        9,
        "r-3",
        "p",
        request,
        error=ErrorInfo(type="retries_exhausted", message="gave up"),
        dead_letter=(b"original bytes", letter),
    )
    topics = [s["topic"] for s in producer.sent]
    assert sorted(topics) == ["dlq", "out"]
    dlq = next(s for s in producer.sent if s["topic"] == "dlq")
    assert dlq["value"] == b"original bytes"
    assert dead_letter_from_headers(dlq["headers"]).source_offset == 9
    producer.ack()
    assert done == [(("in", 2), 9)]


class RefusingProducer(FakeProducer):
    """Refuses values over ``limit`` bytes in produce(), as librdkafka does past
    ``message.max.bytes``; fails deliveries to ``failing`` topics with ``error``."""

    def __init__(
        self, limit: int, failing: dict[str, Any] | None = None, existing: set[str] | None = None
    ) -> None:
        super().__init__()
        self.limit = limit
        self.failing = failing or {}
        self.existing = existing or {"out", "dlq", "jobs"}

    def list_topics(self, topic: str, timeout: float) -> Any:
        """Metadata as librdkafka gives it: a missing topic is absent (or has an error)."""
        known = {topic: SimpleNamespace(error=None)} if topic in self.existing else {}
        return SimpleNamespace(topics=known)

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any = None
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException

        if len(value) > self.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        if topic in self.failing:
            on_delivery(self.failing.pop(topic), _Delivered())
            return
        super().produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)


def test_a_result_refused_as_too_large_is_answered_with_an_error() -> None:
    producer = RefusingProducer(limit=500)
    w, done = writer_on(producer)
    request = Request(id="r-1", pipeline="p.predict", params={})
    w.answer_ok(("in", 0), 7, request, {"x": "y" * 1000}, model=None, timings={}, attempts=1)
    producer.ack()
    (sent,) = producer.sent
    result = decode_result(sent["value"])
    assert result.error is not None
    assert result.error.type == "result_too_large"
    assert done == [(("in", 0), 7)]


def test_a_dead_letter_too_large_to_copy_is_written_without_its_value() -> None:
    producer = RefusingProducer(limit=500)
    w, done = writer_on(producer)
    request = Request(id="r-1", pipeline="p.predict", params={})
    letter = DeadLetter(
        error_type="retries_exhausted",
        error_message="failed",
        source_topic="in",
        source_partition=0,
        source_offset=7,
        request_id="r-1",
    )
    error = ErrorInfo(type="retries_exhausted", message="failed")
    w.answer(("in", 0), 7, "r-1", "p", request, error=error, dead_letter=(b"z" * 1000, letter))
    producer.ack()
    (copy,) = [s for s in producer.sent if s["topic"] == "dlq"]
    assert copy["value"] == b""
    assert ("rayml.value_dropped_bytes", "1000") in copy["headers"]
    assert done == [(("in", 0), 7)]


def test_only_a_topic_error_moves_an_answer_from_reply_to_to_the_result_topic() -> None:
    from confluent_kafka import KafkaError

    # Both writes time out, which may be the topic's fault or the broker's: the broker's
    # metadata tells the two apart.
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    timed_out = RefusingProducer(limit=10_000, failing={"mine": timeout}, existing={"out", "mine"})
    clock = Clock()
    w, _ = writer_on(timed_out, clock=clock)
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="mine")
    w.answer_ok(("in", 0), 1, request, {"x": 1}, model=None, timings={}, attempts=1)
    assert timed_out.sent == [], "parked while the broker is asked"
    assert w.settle(wait_s=5.0) == 1
    # The topic is not to blame (the broker was): retried where it belongs, after a backoff.
    assert timed_out.sent == []
    assert [t["topic"] for t in w.failing_topics] == ["mine"]
    clock.now += 0.1
    w.settle()
    assert [s["topic"] for s in timed_out.sent] == ["mine"]

    gone = RefusingProducer(limit=10_000, failing={"gone": timeout})
    w, _ = writer_on(gone)
    request = Request(id="r-2", pipeline="p.predict", params={}, reply_to="gone")
    w.answer_ok(("in", 0), 2, request, {"x": 1}, model=None, timings={}, attempts=1)
    assert w.settle(wait_s=5.0) == 1
    assert [s["topic"] for s in gone.sent] == ["out"]
    # Learnt: the next result for the missing topic goes to the result topic at once.
    request = Request(id="r-3", pipeline="p.predict", params={}, reply_to="gone")
    w.answer_ok(("in", 0), 3, request, {"x": 1}, model=None, timings={}, attempts=1)
    assert [s["topic"] for s in gone.sent] == ["out", "out"]


class SlowBrokerProducer(FakeProducer):
    """Every delivery to ``replies`` times out; metadata answers only once ``answer`` is set."""

    def __init__(self, topic_exists: bool) -> None:
        super().__init__()
        self.answer = threading.Event()
        self.questions = 0
        self.topic_exists = topic_exists

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.questions += 1
        self.answer.wait(timeout)
        exists = self.topic_exists and topic == "replies"
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None)} if exists else {})

    def fail_replies(self) -> None:
        from confluent_kafka import KafkaError

        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(KafkaError(KafkaError._MSG_TIMED_OUT), _Delivered())


@pytest.mark.parametrize("topic_exists", [True, False])
def test_failed_reply_to_writes_wait_for_one_metadata_answer_without_blocking(
    topic_exists: bool,
) -> None:
    producer = SlowBrokerProducer(topic_exists)
    clock = Clock()
    w, done = writer_on(producer, clock=clock)
    for offset in range(50):
        request = Request(id=f"r-{offset}", pipeline="p", params={}, reply_to="replies")
        w.answer_ok(("in", 0), offset, request, {"x": 1}, model=None, timings={}, attempts=1)
    started = time.monotonic()
    producer.fail_replies()  # a broker outage fails them all in one delivery-report poll
    assert time.monotonic() - started < 1.0, "the loop thread must not wait for the broker"
    assert w.parked == 50
    assert w.settle() == 0, "nothing to write before the broker answers"
    producer.answer.set()
    assert w.settle(wait_s=5.0) == 50
    assert producer.questions == 1, "one question for the topic, not one per failed result"
    assert w.parked == 0
    if topic_exists:
        # The broker, not the topic, failed them: one result probes the topic after a backoff;
        # once it is delivered, the others follow.
        assert producer.sent[50:] == []
        clock.now += 0.1
        w.settle()
        assert [s["key"] for s in producer.sent[50:]] == [b"r-0"]
        producer.ack()
    retried = [s["topic"] for s in producer.sent[50:]]
    assert retried == ["replies" if topic_exists else "out"] * 50
    producer.ack()
    assert sorted(offset for _, offset in done) == list(range(50))
    assert w.failing_topics == ()
    w.close()


def test_parked_results_of_partitions_let_go_of_are_forgotten() -> None:
    producer = SlowBrokerProducer(topic_exists=True)
    clock = Clock()
    w, _ = writer_on(producer, clock=clock)
    for partition in (0, 1):
        request = Request(id=f"r-{partition}", pipeline="p", params={}, reply_to="replies")
        w.answer_ok(("in", partition), 5, request, {"x": 1}, model=None, timings={}, attempts=1)
    producer.fail_replies()
    assert w.parked == 2
    assert w.forget({("in", 0)}) == 1, "partition 0 was revoked: its new owner answers r-0"
    producer.answer.set()
    assert w.settle(wait_s=5.0) == 1
    clock.now += 0.1
    w.settle()
    assert [s["key"] for s in producer.sent[2:]] == [b"r-1"]
    w.close()


class TopicLimitProducer(FakeProducer):
    """A broker whose topics refuse records over their ``max.message.bytes`` at delivery."""

    def __init__(self, limits: dict[str, int]) -> None:
        super().__init__()
        self.limits = limits

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any = None
    ) -> None:
        from confluent_kafka import KafkaError

        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        if len(value) > self.limits.get(topic, 1 << 30):
            on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), _Delivered())
        elif on_delivery is not None:
            self._callbacks.append(on_delivery)


def test_a_reply_topic_that_refuses_every_record_gets_one_try_then_the_result_topic() -> None:
    producer = TopicLimitProducer({"replies": 10})
    w, done = writer_on(producer)
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="replies")
    w.answer_ok(("in", 0), 7, request, {"x": "y" * 1000}, model=None, timings={}, attempts=1)
    producer.ack()
    # The result, then its small error result, on the reply topic; then the error result on
    # the result topic. Nothing more: no loop.
    assert [s["topic"] for s in producer.sent] == ["replies", "replies", "out"]
    result = decode_result(producer.sent[-1]["value"])
    assert result.error is not None
    assert result.error.type == "result_too_large"
    assert "replies" in result.error.message
    assert done == [(("in", 0), 7)]


def test_a_result_topic_that_refuses_even_the_error_result_ends_without_a_loop() -> None:
    producer = TopicLimitProducer({"out": 10})
    w, done = writer_on(producer)
    request = Request(id="r-1", pipeline="p.predict", params={})
    w.answer_ok(("in", 0), 7, request, {"x": "y" * 1000}, model=None, timings={}, attempts=1)
    producer.ack()
    assert [s["topic"] for s in producer.sent] == ["out", "out"]
    assert done == [(("in", 0), 7)]


def test_exactly_once_redo_of_a_twice_refused_result_goes_to_the_result_topic() -> None:
    from confluent_kafka import KafkaError

    w, _producer, _done = writer()
    err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    w.note_failed_delivery("replies", b"r-1", err)  # the result: too large
    answer = SimpleNamespace(
        request_id="r-1", pipeline="p", attempts=1, tenant="team-a", result_topic="out"
    )
    [first] = w._staged_results("replies", b"x" * 1000, answer)  # type: ignore[arg-type]
    assert first.topic == "replies"
    assert decode_result(first.value).error.type == "result_too_large"  # type: ignore[union-attr]
    w.note_failed_delivery("replies", b"r-1", err)  # even the error result: too large
    [second] = w._staged_results("replies", b"x" * 1000, answer)  # type: ignore[arg-type]
    assert second.topic == "out"
    assert decode_result(second.value).error.type == "result_too_large"  # type: ignore[union-attr]
    w.note_failed_delivery("out", b"r-1", err)  # the result topic refuses it too
    assert w._staged_results("replies", b"x" * 1000, answer) == []  # type: ignore[arg-type]
    # A reply topic that refused even a small error is given up on as a whole: the next
    # request's result goes to the result topic at once (not two aborts per request).
    assert "replies" in w.unwritable_topics
    assert w._result_topic("replies", "out") == "out"


# --- persistent write failures ---------------------------------------------------------------


class OutageProducer(FakeProducer):
    """A broker on which the topics in ``down`` refuse every write with ``error`` (e.g. an ACL
    removed: TOPIC_AUTHORIZATION_FAILED, reported at once); ``raising`` topics are refused in
    produce() itself, as librdkafka refuses a topic it knows to be missing."""

    def __init__(self, error: int) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.raising: set[str] = set()
        self.error = error
        self.attempts = 0

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any = None
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException

        self.attempts += 1
        if topic in self.raising:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))
        if topic in self.down:
            self._callbacks.append(
                lambda _err, msg: on_delivery(KafkaError(self.error), msg)  # fails on ack()
            )
            return
        super().produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)


def _answer_all(w: ResultWriter, n: int, start: int = 0) -> None:
    for offset in range(start, start + n):
        request = Request(id=f"r-{offset}", pipeline="p", params={})
        w.answer_ok(("in", 0), offset, request, {"x": 1}, model=None, timings={}, attempts=1)


def test_a_failing_result_topic_is_probed_with_backoff_and_nothing_is_done_or_lost() -> None:
    from confluent_kafka import KafkaError

    producer = OutageProducer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    clock = Clock()
    w, done = writer_on(producer, clock=clock, retry_initial_s=0.1, retry_max_s=1.0)
    producer.down.add("out")
    _answer_all(w, 20)
    producer.ack()  # all 20 fail at once
    assert done == []
    assert w.failed_deliveries == {("out", "TOPIC_AUTHORIZATION_FAILED"): 20}
    [failing] = w.failing_topics
    assert failing["topic"] == "out"
    assert failing["error"].startswith("TOPIC_AUTHORIZATION_FAILED")
    assert (failing["failures"], failing["waiting"]) == (20, 20)
    # New results for the failing topic wait without a try of their own.
    _answer_all(w, 5, start=20)
    assert producer.attempts == 20
    # 10 s of outage: one probe per backoff step (0.1, 0.2, 0.4, 0.8, then 1 s, each with a
    # jitter that may halve it), never one try per waiting result: 12 probes with the longest
    # delays (0.1 + 0.2 + 0.4 + 0.8 + 8 x 1 s <= 10 s), 23 with the shortest.
    for _ in range(1000):
        clock.now += 0.01
        w.settle()
        producer.ack()
    probes = producer.attempts - 20
    assert 12 <= probes <= 23
    assert done == []
    assert w.retries_waiting == 25
    # The topic works again: the next probe succeeds and everything waiting follows, once.
    producer.down.clear()
    clock.now += 1.0
    w.settle()
    producer.ack()
    producer.ack()
    assert sorted(offset for _, offset in done) == list(range(25))
    assert [s["key"] for s in producer.sent].count(b"r-0") == 1
    assert w.failing_topics == ()
    assert w.retries_waiting == 0


def test_a_topic_librdkafka_knows_missing_is_retried_not_raised() -> None:
    from confluent_kafka import KafkaError

    producer = OutageProducer(KafkaError.UNKNOWN_TOPIC_OR_PART)
    clock = Clock()
    w, done = writer_on(producer, clock=clock)
    producer.raising.add("dlq")
    letter = SimpleNamespace(
        topic=lambda: "in", partition=lambda: 0, offset=lambda: 4, key=lambda: None
    )
    letter.value = lambda: b"not json"
    letter.headers = lambda: None
    w.dead_letter(letter, "undecodable", "not JSON")  # type: ignore[arg-type]
    assert [t["topic"] for t in w.failing_topics] == ["dlq"]
    assert w.failed_deliveries == {("dlq", "_UNKNOWN_TOPIC"): 1}
    producer.raising.clear()
    clock.now += 0.1
    w.settle()
    producer.ack()
    assert done == [(("in", 0), 4)]
    assert w.failing_topics == ()


def test_waiting_writes_of_partitions_let_go_of_are_forgotten() -> None:
    from confluent_kafka import KafkaError

    producer = OutageProducer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    w, _done = writer_on(producer, clock=Clock())
    producer.down.add("out")
    for partition in (0, 1):
        request = Request(id=f"r-{partition}", pipeline="p", params={})
        w.answer_ok(("in", partition), 3, request, {"x": 1}, model=None, timings={}, attempts=1)
    producer.ack()
    assert w.retries_waiting == 2
    assert w.forget({("in", 0)}) == 1
    assert w.retries_waiting == 1


def test_failed_delivery_labels_are_bounded() -> None:
    from confluent_kafka import KafkaError

    producer = OutageProducer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    w, _ = writer_on(producer, clock=Clock())
    for n in range(150):
        w._counts.failed_delivery(
            f"reply-{n}", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED).name()
        )
    assert len(w.failed_deliveries) == 101
    assert w.failed_deliveries[("_other", "TOPIC_AUTHORIZATION_FAILED")] == 50
    assert w.failed_total == 150


def test_a_reply_to_the_broker_does_not_have_is_answered_on_the_result_topic_at_once() -> None:
    """Asked first: no write to a missing topic (librdkafka would wait 30 s, exactly-once
    would abort), and a batch's names cost one round, however many requests name them."""
    asked: list[list[str]] = []

    def ask(names: list[str]) -> dict[str, str | None]:
        asked.append(names)
        return {n: None if n == "replies" else "the broker has no such topic" for n in names}

    producer = FakeProducer()
    w, done = writer_on(producer, reply_topics=ReplyTopics(ask))
    names = ["replies", *(f"bogus-{i}" for i in range(100))]
    w.check_reply_topics(names)
    for i, name in enumerate(names):
        request = Request(id=f"r-{i}", pipeline="p.predict", params={}, reply_to=name)
        w.answer_ok(("in", 0), i, request, {"x": 1}, model=None, timings={}, attempts=1)
    assert len(asked) == 1
    assert [m["topic"] for m in producer.sent] == ["replies", *(["out"] * 100)]
    assert w.results_rerouted == 100
    producer.ack()
    assert len(done) == 101


def test_a_reply_to_not_asked_about_yet_is_asked_before_its_result_is_written() -> None:
    producer = FakeProducer()
    w, _ = writer_on(producer, reply_topics=ReplyTopics(lambda names: dict.fromkeys(names, "no")))
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="nope")
    w.answer(("in", 0), 1, "r-1", "p.predict", request, error=ErrorInfo(type="x", message="y"))
    assert [m["topic"] for m in producer.sent] == ["out"]


def test_exactly_once_stages_a_missing_reply_topics_result_on_the_result_topic() -> None:
    staged: list[Any] = []
    w = ResultWriter(
        FakeProducer(),  # type: ignore[arg-type]
        tenants=TENANTS,
        dlq_topic="dlq",
        on_done=lambda tp, offset: None,
        owner="test",
        stage=lambda tp, offset, records: staged.append(records),
        reply_topics=ReplyTopics(lambda names: dict.fromkeys(names, "no such topic")),
    )
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="bogus")
    w.answer_ok(("in", 0), 1, request, {"x": 1}, model=None, timings={}, attempts=1)
    [[record]] = staged
    assert record.topic == "out"


# --- tenants: the result topic and the tenant come from the request's topic -------------------


def test_each_tenant_is_answered_on_its_own_result_topic_and_named_by_its_topic() -> None:
    w, producer, _ = writer()
    plain = Request(id="r-b", pipeline="p", params={})
    w.answer_ok(("b.in", 0), 1, plain, {"x": 1}, model=None, timings={}, attempts=1)
    w.answer(("b.in", 0), 2, "r-e", "p", None, error=ErrorInfo(type="x", message="y"))
    w.answer_ok(("in", 0), 3, plain, {"x": 1}, model=None, timings={}, attempts=1)
    sent = [(m["topic"], decode_result(m["value"]).tenant) for m in producer.sent]
    assert sent == [("b.out", "team-b"), ("b.out", "team-b"), ("out", "team-a")]


def test_an_unwritable_reply_to_falls_back_to_its_own_tenants_result_topic() -> None:
    from confluent_kafka import KafkaError

    producer = OutageProducer(KafkaError.UNKNOWN_TOPIC_OR_PART)
    producer.down.add("b.replies.gone")
    w, done = writer_on(producer)
    request = Request(id="r-1", pipeline="p", params={}, reply_to="b.replies.gone")
    w.answer_ok(("b.in", 0), 4, request, {"x": 1}, model=None, timings={}, attempts=1)
    producer.ack()
    producer.ack()
    assert [m["topic"] for m in producer.sent] == ["b.out"]  # the failed write is not kept
    assert done == [(("b.in", 0), 4)]


def test_an_error_result_carries_no_address_pid_path_or_traceback_and_the_log_has_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w, producer, _ = writer()
    ray_error = (
        "ray::ModelWorker.run_batch() (pid=4242, ip=10.1.2.3, actor_id=4f6c1f0b2e7d9a8c)\n"
        '  File "/srv/rayml/executor/worker.py", line 12, in run_batch\n'
        "OSError: /srv/models/iris/000003/model.json"
    )
    error = ErrorInfo(type="pipeline_failed", message=ray_error, details={"where": "10.1.2.3"})
    with caplog.at_level("WARNING"):
        w.answer(("in", 0), 1, "r-1", "p", None, error=error)
    result = decode_result(producer.sent[0]["value"])
    assert result.error is not None
    text = result.error.model_dump_json()
    for leak in ("10.1.2.3", "4242", "/srv/", "File ", "4f6c1f0b2e7d9a8c"):
        assert leak not in text, leak
    assert result.error.message == "ray::ModelWorker.run_batch()"
    assert w.errors_scrubbed == 1
    assert "r-1" in caplog.text
    assert "10.1.2.3" in caplog.text, "the operator's log keeps it"


# --- every outcome of a failing topic's probe ends it (no wait for probe_lost_s) --------------


class ScriptedBroker(FakeProducer):
    """Each write's fate is ``fate(topic, value)``: None (acknowledged on ``ack()``), an error
    code (its delivery fails on ``ack()``), or ``("raise", code)``: refused by ``produce()``
    itself. Metadata: the topics in ``existing`` exist."""

    def __init__(self, fate: Any, existing: set[str] | None = None) -> None:
        super().__init__()
        self.fate = fate
        self.existing = existing or set()
        self.questions = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.questions += 1
        return SimpleNamespace(
            topics={topic: SimpleNamespace(error=None)} if topic in self.existing else {}
        )

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any = None
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException

        fate = self.fate(topic, value)
        if isinstance(fate, tuple):
            raise KafkaException(KafkaError(fate[1]))
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        if fate is None:
            self._callbacks.append(on_delivery)
        else:
            self._callbacks.append(lambda _err, msg, code=fate: on_delivery(KafkaError(code), msg))


def _ok(w: ResultWriter, offset: int, *, reply_to: str | None = None, size: int = 1, p: int = 0):
    request = Request(id=f"r-{offset}", pipeline="p", params={}, reply_to=reply_to)
    output = {"x": "y" * size}
    w.answer_ok(("in", p), offset, request, output, model=None, timings={}, attempts=1)


def _until_probe(w: ResultWriter, producer: FakeProducer, clock: Clock) -> dict[str, Any]:
    """Move the clock until the next probe goes; return it."""
    sent = len(producer.sent)
    for _ in range(10_000):
        clock.now += 0.01
        w.settle()
        if len(producer.sent) > sent:
            [probe] = producer.sent[sent:]
            return probe
    raise AssertionError("no probe")


def test_a_probe_refused_as_too_large_by_the_broker_ends_the_failure_and_is_shrunk() -> None:
    from confluent_kafka import KafkaError

    down = {"out"}

    def fate(topic: str, value: bytes) -> Any:
        if topic in down:
            return KafkaError.TOPIC_AUTHORIZATION_FAILED
        return KafkaError.MSG_SIZE_TOO_LARGE if len(value) > 300 else None

    producer, clock = ScriptedBroker(fate), Clock()
    w, done = writer_on(producer, clock=clock)
    _ok(w, 0, size=1_000)
    _ok(w, 1)
    _ok(w, 2)
    producer.ack()  # all three fail: "out" is failing, they wait
    assert w.retries_waiting == 3
    down.clear()
    probe = _until_probe(w, producer, clock)
    assert probe["key"] == b"r-0"
    producer.ack()  # the broker refuses the probe as too large: so the topic answers
    assert w.failing_topics == ()
    assert w.retries_waiting == 0
    assert [s["key"] for s in producer.sent[4:]] == [b"r-1", b"r-2", b"r-0"]
    shrunk = decode_result(producer.sent[-1]["value"])
    assert shrunk.error is not None
    assert shrunk.error.type == "result_too_large"
    producer.ack()
    assert sorted(offset for _, offset in done) == [0, 1, 2]


def test_a_probe_refused_as_too_large_by_the_producer_lets_the_next_write_probe_at_once() -> None:
    from confluent_kafka import KafkaError

    down = {"out"}

    def fate(topic: str, value: bytes) -> Any:
        if len(value) > 300:
            return ("raise", KafkaError.MSG_SIZE_TOO_LARGE)  # past message.max.bytes
        return KafkaError.TOPIC_AUTHORIZATION_FAILED if topic in down else None

    producer, clock = ScriptedBroker(fate), Clock()
    w, done = writer_on(producer, clock=clock)
    _ok(w, 0, p=1)
    producer.ack()  # "out" fails
    _ok(w, 1, size=1_000)  # held: the topic is failing
    _ok(w, 2)
    assert w.forget({("in", 1)}) == 1  # r-0's partition let go of: the large r-1 probes next
    clock.now += 0.1
    w.settle()  # r-1 probes; produce() refuses it: says nothing of the topic
    assert w.retries_waiting == 2, "r-2, and r-1 shrunk, waiting behind it"
    down.clear()
    probe = _until_probe(w, producer, clock)
    assert probe["key"] == b"r-2", "the next write probes at once, not after probe_lost_s"
    assert clock.now - 1000.0 < 0.2
    producer.ack()  # r-2 delivered: the topic works, the shrunk r-1 that waited follows
    producer.ack()
    assert [s["key"] for s in producer.sent[-2:]] == [b"r-2", b"r-1"]
    assert decode_result(producer.sent[-1]["value"]).error.type == "result_too_large"  # type: ignore[union-attr]
    assert sorted(offset for _, offset in done) == [1, 2]
    assert w.failing_topics == ()


def _failing_reply_topic(
    n: int,
) -> tuple[ResultWriter, ScriptedBroker, Clock, list[Any], dict[str, Any]]:
    """``n`` results for "replies", which exists, all timed out: it is failing."""
    from confluent_kafka import KafkaError

    state: dict[str, Any] = {"replies": KafkaError._MSG_TIMED_OUT}
    producer = ScriptedBroker(lambda topic, value: state.get(topic), existing={"replies", "out"})
    clock = Clock()
    w, done = writer_on(producer, clock=clock)
    for offset in range(n):
        _ok(w, offset, reply_to="replies")
    if n:
        producer.ack()
        assert w.parked == n
        assert w.settle(wait_s=5.0) == n  # the topic exists: the broker was to blame
        assert [t["topic"] for t in w.failing_topics] == ["replies"]
    return w, producer, clock, done, state


def test_a_reply_to_probe_that_times_out_again_backs_off_without_being_parked() -> None:
    w, producer, clock, _done, _state = _failing_reply_topic(3)
    assert producer.questions == 1
    probe = _until_probe(w, producer, clock)
    assert probe["key"] == b"r-0"
    producer.ack()  # the probe times out again
    assert w.parked == 0, "not parked again: it goes back to its failing topic as the probe"
    assert w.retries_waiting == 3
    failed_at = clock.now
    second = _until_probe(w, producer, clock)
    assert second["key"] == b"r-0", "the same write probes again, still the oldest"
    # Equal jitter: the delay after the first failed probe is 0.1-0.2 s, after the second
    # 0.05-0.1 s would be the first step again; a doubled step shows the same probe failed.
    assert 0.1 <= clock.now - failed_at <= 0.21
    assert producer.questions == 1, "no new question: the broker said the topic exists"


def test_a_reply_to_probe_refused_as_missing_moves_every_waiting_result_to_the_result_topic() -> (
    None
):
    from confluent_kafka import KafkaError

    w, producer, clock, done, state = _failing_reply_topic(5)
    state["replies"] = KafkaError.UNKNOWN_TOPIC_OR_PART  # deleted meanwhile
    probe = _until_probe(w, producer, clock)
    sent = len(producer.sent)
    producer.ack()  # the probe's topic error decides for all five
    moved = producer.sent[sent:]
    assert [m["topic"] for m in moved] == ["out"] * 5
    assert sorted(m["key"] for m in moved) == [f"r-{i}".encode() for i in range(5)]
    assert probe["key"] in {m["key"] for m in moved}
    assert (w.failing_topics, w.retries_waiting, w.held_bytes) == ((), 0, 0)
    _ok(w, 5, reply_to="replies")
    assert producer.sent[-1]["topic"] == "out", "learnt: the next result goes there at once"
    producer.ack()
    assert sorted(offset for _, offset in done) == list(range(6))


def test_a_reply_to_that_keeps_timing_out_is_given_up_after_three_failed_probes() -> None:
    """An offline partition or too few in-sync replicas: the reply topic exists and every
    write times out. Its results must not hold their partitions' commits for ever."""
    w, producer, clock, done, _state = _failing_reply_topic(10)
    for attempt in range(3):
        probe = _until_probe(w, producer, clock)
        assert (probe["topic"], probe["key"]) == ("replies", b"r-0")
        producer.ack()  # times out
        if attempt < 2:
            assert w.retries_waiting == 10
    sent = len(producer.sent)
    w.settle()  # three failed probes: given up
    assert [m["topic"] for m in producer.sent[sent:]] == ["out"] * 10
    assert (w.failing_topics, w.retries_waiting) == ((), 0)
    assert len([s for s in producer.sent if s["topic"] == "replies"]) == 10 + 3
    _ok(w, 10, reply_to="replies")
    assert producer.sent[-1]["topic"] == "out"
    producer.ack()
    assert sorted(offset for _, offset in done) == list(range(11))


def test_a_reply_to_whose_probe_never_reports_is_given_up_after_a_minute() -> None:
    w, producer, clock, done, state = _failing_reply_topic(4)
    state["replies"] = None
    probe = _until_probe(w, producer, clock)  # out, and its report does not come back yet
    waiting_since = clock.now
    hung = producer._callbacks[:]
    producer._callbacks.clear()
    sent = len(producer.sent)
    while clock.now - waiting_since < 60.0:
        w.settle()
        assert len(producer.sent) == sent
        clock.now += 1.0
    w.settle()
    assert [m["key"] for m in producer.sent[sent:]] == [b"r-1", b"r-2", b"r-3"]
    assert {m["topic"] for m in producer.sent[sent:]} == {"out"}
    from confluent_kafka import KafkaError

    hung[0](KafkaError(KafkaError._MSG_TIMED_OUT), None)  # the probe's report, late
    assert producer.sent[-1]["topic"] == "out"
    assert producer.sent[-1]["key"] == probe["key"]
    producer.ack()
    assert sorted(offset for _, offset in done) == list(range(4))


def test_the_result_topic_keeps_waiting_however_many_probes_fail() -> None:
    from confluent_kafka import KafkaError

    producer = ScriptedBroker(lambda topic, value: KafkaError._MSG_TIMED_OUT)
    clock = Clock()
    w, done = writer_on(producer, clock=clock)
    for offset in range(3):
        _ok(w, offset)
    producer.ack()
    for _ in range(6):
        _until_probe(w, producer, clock)
        producer.ack()
    clock.now += 120.0
    w.settle()
    assert [t["topic"] for t in w.failing_topics] == ["out"], "nothing else can take them"
    assert w.retries_waiting == 3
    assert done == []


# --- what the writer holds counts in the byte budget ---------------------------------------


def test_held_bytes_count_the_parked_and_waiting_results_until_they_leave() -> None:
    w, producer, clock, done, state = _failing_reply_topic(0)  # "replies" times out
    for offset in range(3):
        _ok(w, offset, reply_to="replies", size=1_000, p=offset % 2)
    sizes = [len(s["value"]) for s in producer.sent]
    assert w.held_bytes == 0, "in the producer's queue: not the writer's"
    producer.ack()  # time out: parked
    assert w.parked == 3
    assert w.held_bytes == sum(sizes)
    assert w.forget({("in", 1)}) == 1
    assert w.held_bytes == sizes[0] + sizes[2]
    w.settle(wait_s=5.0)  # the topic exists: they wait for it
    assert w.retries_waiting == 2
    assert w.held_bytes == sizes[0] + sizes[2]
    state["replies"] = None
    _until_probe(w, producer, clock)
    assert w.held_bytes == sizes[0] + sizes[2], "a probe out is held until its report"
    producer.ack()
    assert w.held_bytes == 0
    producer.ack()
    assert sorted(offset for _, offset in done) == [0, 2]


# --- failed-delivery labels: rayml's own topics always by name ---------------------------------


def test_a_flood_of_reply_to_labels_never_hides_the_own_topics_failures() -> None:
    from confluent_kafka import KafkaError

    w, _ = writer_on(FakeProducer(), clock=Clock())
    err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    for n in range(150):
        w._counts.failed_delivery(f"reply-{n}", err.name())
    for topic in ("out", "b.out", "dlq"):
        w._counts.failed_delivery(topic, err.name())
        w._counts.failed_delivery(topic, KafkaError(KafkaError._MSG_TIMED_OUT).name())
    counts = w.failed_deliveries
    for topic in ("out", "b.out", "dlq"):
        assert counts[(topic, "TOPIC_AUTHORIZATION_FAILED")] == 1
        assert counts[(topic, "_MSG_TIMED_OUT")] == 1
    others = [k for k in counts if k[0] not in {"out", "b.out", "dlq", "_other"}]
    assert len(others) == 100
    assert counts[("_other", "TOPIC_AUTHORIZATION_FAILED")] == 50
    assert w.failed_total == 156


def test_exactly_once_gives_up_on_a_reply_to_whose_writes_time_out_in_three_transactions() -> None:
    """No abort loop: each aborted transaction's redo would time out the same way."""
    from confluent_kafka import KafkaError

    staged: list[Any] = []
    producer = ScriptedBroker(lambda topic, value: None, existing={"replies", "out"})
    w = ResultWriter(
        producer,  # type: ignore[arg-type]
        tenants=TENANTS,
        dlq_topic="dlq",
        on_done=lambda tp, offset: None,
        owner="test",
        stage=lambda tp, offset, records: staged.append(records),
        reply_topics=ReplyTopics(lambda names: dict.fromkeys(names)),
        clock=Clock(),
    )
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    for turn in range(3):
        _ok(w, turn, reply_to="replies")
        assert staged[-1][0].topic == "replies"
        for key in (b"a", b"b"):  # two of the transaction's writes timed out: one turn
            w.note_failed_delivery("replies", key, timeout)
        w.settle(wait_s=5.0)  # the broker says the topic exists
    _ok(w, 3, reply_to="replies")
    assert staged[-1][0].topic == "out"
    w.close()


# --- error results by (pipeline, type): bounded labels -----------------------------------------


def _error(w: ResultWriter, offset: int, pipeline: str, error_type: str) -> None:
    w.answer(
        ("in", 0),
        offset,
        f"r-{offset}",
        pipeline,
        None,
        error=ErrorInfo(type=error_type, message="no"),
    )


def test_error_results_are_counted_by_pipeline_and_type_and_ok_results_are_not() -> None:
    w, producer, _ = writer()
    _error(w, 0, "p.predict", "invalid_params")
    _error(w, 1, "p.predict", "invalid_params")
    _error(w, 2, "no.such", "unknown_pipeline")
    _ok(w, 3)  # the hot path
    w.answer(("in", 0), 4, "r-4", "p.predict", None, output={"y": 1})  # the pydantic one
    assert w.error_results == {
        ("p.predict", "invalid_params"): 2,
        ("no.such", "unknown_pipeline"): 1,
    }
    assert sum(w.error_results.values()) == w.results_error == 3
    assert len(producer.sent) == 5


def test_10000_hostile_pipelines_and_error_types_give_at_most_cap_plus_one_label_pairs() -> None:
    from rayml.delivery.failure_counts import _MAX_LABELS

    w, _, _ = writer()
    _error(w, 0, "p.predict", "invalid_params")  # a real pipeline's error, named before the flood
    for n in range(10_000):
        # Each a new pair: a request naming a bogus pipeline, a pipeline raising a fresh code.
        _error(w, 1 + n, f"bogus-{n}", "unknown_pipeline" if n % 2 else f"code-{n}")
    _error(w, 10_001, "p.predict", "invalid_params")  # named pairs go on being counted by name
    counts = w.error_results
    assert len(counts) == _MAX_LABELS + 1
    assert counts[("p.predict", "invalid_params")] == 2
    named = {k: v for k, v in counts.items() if k != ("_other", "_other")}
    assert named == {
        ("p.predict", "invalid_params"): 2,
        **{
            (f"bogus-{n}", "unknown_pipeline" if n % 2 else f"code-{n}"): 1
            for n in range(_MAX_LABELS - 1)
        },
    }
    assert counts[("_other", "_other")] == 10_000 - (_MAX_LABELS - 1)
    assert sum(counts.values()) == w.results_error == 10_002
