"""Exactly-once output without a broker: staged writes, transaction offsets, aborts, fencing.

A fake transactional producer records the calls a :class:`TransactionalOutput` makes, so the
order of writes, the offsets sent with each transaction and the error classes are checked in
milliseconds. The real broker path is `tests/integration/test_exactly_once.py`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from rayml.delivery.out_records import OutRecord
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.transactions import (
    ProducerFencedError,
    TransactionAbortedError,
    TransactionalOutput,
)
from rayml.protocol.dead_letters import DeadLetter
from rayml.protocol.envelopes import ErrorInfo, Request, decode_result

TP = ("in", 0)
TP1 = ("in", 1)


class _Msg:
    def __init__(self, topic: str, key: bytes | None) -> None:
        self._topic, self._key = topic, key

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key


class FakeTxnProducer:
    """Records transactional calls; ``fail_next`` makes the next call of a name raise."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.committed: list[list[tuple[str, int, int]]] = []
        self.delivery_error: KafkaError | None = None
        self.fail_next: dict[str, KafkaError] = {}
        self._reports: list[Any] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        err = self.fail_next.pop(name, None)
        if err is not None:
            raise KafkaException(err)

    def init_transactions(self, *_: Any) -> None:
        self._maybe_fail("init")

    def begin_transaction(self) -> None:
        self._maybe_fail("begin")

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any
    ) -> None:
        self._maybe_fail("produce")
        self.sent.append((topic, value, key))
        self._reports.append((on_delivery, _Msg(topic, key)))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        reports, self._reports = self._reports, []
        for callback, msg in reports:
            callback(self.delivery_error, msg)
        return 0

    def send_offsets_to_transaction(self, offsets: list[Any], _meta: Any, _timeout: float) -> None:
        self._maybe_fail("send_offsets")
        self.pending_offsets = [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def commit_transaction(self, _timeout: float) -> None:
        self._maybe_fail("commit")
        self.committed.append(sorted(self.pending_offsets))

    def abort_transaction(self, _timeout: float) -> None:
        self._maybe_fail("abort")


def output() -> tuple[TransactionalOutput, FakeTxnProducer, list[tuple[str, bytes | None]]]:
    producer = FakeTxnProducer()
    failed: list[tuple[str, bytes | None]] = []
    txn = TransactionalOutput(
        producer,  # type: ignore[arg-type]
        "g.ingest-0",
        on_failed_delivery=lambda topic, key, _err: failed.append((topic, key)),
        owner="test",
    )
    txn.start()
    return txn, producer, failed


def rec(name: str) -> list[OutRecord]:
    return [OutRecord("out", name.encode(), name.encode(), None)]


def test_writes_enter_the_transaction_in_offset_order_and_commit_with_next_offsets() -> None:
    txn, producer, _ = output()
    for offset in (10, 11, 12):
        txn.track(TP, offset)
    txn.track(TP1, 3)
    txn.stage(TP, 12, rec("r12"))
    txn.stage(TP, 11, rec("r11"))
    assert producer.sent == []  # 10 still running: nothing may enter the transaction
    assert txn.commit(b"meta") == {}  # nothing to commit: no empty transaction
    txn.stage(TP1, 3, rec("p1"))
    txn.stage(TP, 10, rec("r10"))
    assert [v for _, v, _ in producer.sent] == [b"p1", b"r10", b"r11", b"r12"]
    assert producer.calls.count("begin") == 1
    done = txn.commit(b"meta")
    assert done == {TP1: [3], TP: [10, 11, 12]}
    assert producer.committed == [[("in", 0, 13), ("in", 1, 4)]]
    assert txn.commit(b"meta") == {}


def test_offsets_stop_before_a_record_still_running() -> None:
    txn, producer, _ = output()
    for offset in (10, 11, 12):
        txn.track(TP, offset)
    txn.stage(TP, 10, rec("r10"))
    txn.stage(TP, 12, rec("r12"))
    assert txn.commit(b"meta") == {TP: [10]}
    assert producer.committed == [[("in", 0, 11)]]  # not 13: 12's result is not in it
    txn.stage(TP, 11, rec("r11"))
    assert txn.commit(b"meta") == {TP: [11, 12]}
    assert producer.committed[-1] == [("in", 0, 13)]


def test_a_failed_write_aborts_the_transaction_and_tells_the_writer() -> None:
    txn, producer, failed = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, [OutRecord("replies", b"v", b"id-1", None)])
    producer.delivery_error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert "abort" in producer.calls
    assert producer.committed == []
    assert failed == [("replies", b"id-1")]
    assert txn.usable
    assert not txn.dirty


def test_an_abortable_commit_error_aborts() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))
    producer.fail_next["commit"] = KafkaError(KafkaError._STATE, txn_requires_abort=True)
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert producer.calls[-1] == "abort"


def test_a_retriable_error_is_retried() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))
    producer.fail_next["send_offsets"] = KafkaError(KafkaError._TIMED_OUT, retriable=True)
    assert txn.commit(b"meta") == {TP: [0]}
    assert producer.calls.count("send_offsets") == 2


def test_fenced_is_fatal_and_nothing_commits_afterwards() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.track(TP, 1)
    producer.fail_next["produce"] = KafkaError(KafkaError._FENCED, fatal=True)
    txn.stage(TP, 0, rec("r0"))  # not raised in the completion callback...
    assert not txn.usable
    with pytest.raises(ProducerFencedError):  # ...but at the loop's next commit
        txn.commit(b"meta")
    txn.stage(TP, 1, rec("r1"))
    assert producer.committed == []


def test_a_late_completion_for_a_forgotten_partition_is_dropped() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.forget({TP})
    txn.stage(TP, 0, rec("late"))
    assert producer.sent == []
    assert txn.unreleased() == 0


# --- the writer's staged mode --------------------------------------------------------------


def staged_writer() -> tuple[ResultWriter, list[tuple[tuple[str, int], int, list[OutRecord]]]]:
    staged: list[tuple[tuple[str, int], int, list[OutRecord]]] = []

    def never(*_: Any) -> None:
        raise AssertionError("staged mode must not produce or report done")

    class MetadataOnly:
        """Staged mode never produces; it may ask whether a topic exists (two do)."""

        produce = never

        @staticmethod
        def list_topics(topic: str, timeout: float) -> Any:
            known = (
                {topic: SimpleNamespace(error=None)}
                if topic in ("out", "replies", "team.replies")
                else {}
            )
            return SimpleNamespace(topics=known)

    w = ResultWriter(
        MetadataOnly(),  # type: ignore[arg-type]
        output_topic="out",
        dlq_topic="dlq",
        jobs_topic="jobs",
        on_done=never,
        owner="test",
        stage=lambda tp, offset, records: staged.append((tp, offset, records)),
    )
    return w, staged


def test_staged_results_dead_letters_and_dlq_copies_go_to_stage_as_one_list() -> None:
    w, staged = staged_writer()
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="team.replies")
    w.answer_ok(TP, 5, request, {"label": 1}, model=None, timings={"total_ms": 1.0}, attempts=1)
    letter = DeadLetter(
        error_type="retries_exhausted",
        error_message="x",
        source_topic="in",
        source_partition=0,
        source_offset=6,
        request_id="r-2",
    )
    w.answer(
        TP,
        6,
        "r-2",
        "p.predict",
        None,
        error=ErrorInfo(type="retries_exhausted", message="x"),
        dead_letter=(b"raw", letter),
    )
    (tp0, off0, recs0), (tp1, off1, recs1) = staged
    assert (tp0, off0) == (TP, 5)
    assert [r.topic for r in recs0] == ["team.replies"]
    assert decode_result(recs0[0].value).result == {"label": 1}
    assert (tp1, off1) == (TP, 6)
    assert [r.topic for r in recs1] == ["dlq", "out"]
    assert (w.results_ok, w.results_error, w.dead_letters) == (1, 1, 1)


def test_failed_deliveries_change_the_redo() -> None:
    w, staged = staged_writer()
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="gone")
    w.note_failed_delivery("gone", b"r-1", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    w.note_failed_delivery("out", b"r-1", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    w.answer_ok(TP, 0, request, {"big": 1}, model=None, timings={}, attempts=1)
    (_, _, (record,)) = staged[0]
    assert record.topic == "out"  # the unwritable reply_to replaced by the result topic
    result = decode_result(record.value)
    assert result.status == "error"
    assert result.error is not None
    assert result.error.type == "result_too_large"


def test_after_a_crash_nothing_commits_and_a_fatal_error_is_named() -> None:
    txn, _producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))
    fatal = KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
    named = txn.give_up(fatal)
    assert isinstance(named, ProducerFencedError)
    assert not txn.usable
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")


def test_after_another_crash_the_open_transaction_is_aborted() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))
    crash = RuntimeError("bug")
    assert txn.give_up(crash) is crash
    assert producer.calls[-1] == "abort"
    assert producer.committed == []


def test_records_purged_by_an_abort_are_not_a_cause() -> None:
    txn, producer, failed = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))
    producer.delivery_error = KafkaError(KafkaError._PURGE_QUEUE)
    assert txn.commit(b"meta") == {TP: [0]}
    assert failed == []


def test_a_timed_out_delivery_to_reply_to_does_not_move_its_answers() -> None:
    """Delivery reports say retriable() == False even for a timeout (a broker restart)."""
    w, staged = staged_writer()
    request = Request(id="r-1", pipeline="p.predict", params={}, reply_to="replies")
    w.note_failed_delivery("replies", b"r-1", KafkaError(KafkaError._MSG_TIMED_OUT))
    w.answer_ok(TP, 0, request, {"x": 1}, model=None, timings={}, attempts=1)
    (_, _, (record,)) = staged[0]
    assert record.topic == "replies"


def test_a_write_refused_before_queueing_is_learned_for_the_redo() -> None:
    """librdkafka raises MSG_SIZE_TOO_LARGE from produce() itself (message.max.bytes)."""
    txn, producer, failed = output()
    txn.track(TP, 0)
    producer.fail_next["produce"] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    txn.stage(TP, 0, rec("big"))
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert failed == [("out", b"big")]


def test_a_failure_reported_during_the_abort_does_not_abort_the_next_transaction() -> None:
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("a"))
    # The abort flushes: the in-flight write's failure is reported inside abort_transaction.
    producer.delivery_error = KafkaError(KafkaError._MSG_TIMED_OUT)
    original_abort = producer.abort_transaction

    def abort_with_flush(timeout: float) -> None:
        producer.flush(timeout)
        original_abort(timeout)

    producer.abort_transaction = abort_with_flush  # type: ignore[method-assign]
    txn.abort()
    producer.delivery_error = None
    txn.track(TP, 1)
    txn.stage(TP, 1, rec("b"))
    assert txn.commit(b"meta") == {TP: [1]}


def test_a_timed_out_write_is_blamed_on_its_topic_only_if_the_broker_lacks_it() -> None:
    w, staged = staged_writer()
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    w.note_failed_delivery("gone", b"r-1", timeout)
    w.note_failed_delivery("replies", b"r-2", timeout)
    w.settle(wait_s=5.0)
    w.settle(wait_s=5.0)  # the second answer, if it came after the first
    assert set(w.unwritable_topics) == {"gone"}
    for rid, reply_to in (("r-1", "gone"), ("r-2", "replies")):
        request = Request(id=rid, pipeline="p.predict", params={}, reply_to=reply_to)
        w.answer_ok(TP, 0, request, {"x": 1}, model=None, timings={}, attempts=1)
    assert [recs[0].topic for _, _, recs in staged] == ["out", "replies"]
    w.close()


# --- rewinding after an abort -----------------------------------------------------------------


class SeekingConsumer:
    """Committed offsets as the broker returns them; seeks recorded, or refused per partition."""

    def __init__(
        self,
        committed: dict[int, tuple[int, KafkaError | None]],
        not_started: set[int] | None = None,
    ) -> None:
        self._committed = committed
        self.not_started = not_started or set()
        self.seeks: list[tuple[int, int]] = []

    def committed(self, parts: list[Any], timeout: float) -> list[Any]:
        return [
            SimpleNamespace(
                topic=p.topic,
                partition=p.partition,
                offset=self._committed[p.partition][0],
                error=self._committed[p.partition][1],
            )
            for p in parts
        ]

    def seek(self, tp: Any) -> None:
        if tp.partition in self.not_started:
            raise KafkaException(KafkaError(KafkaError._STATE))
        self.seeks.append((tp.partition, tp.offset))


def test_rewind_seeks_to_committed_offsets_or_the_beginning() -> None:
    from rayml.delivery.transactions import rewind_positions

    consumer = SeekingConsumer({0: (42, None), 1: (-1001, None), 2: (7, None)}, not_started={2})
    rewind_positions(consumer, {("in", 0), ("in", 1), ("in", 2)})
    # Partition 2 has not started fetching: it starts at its committed offset anyway.
    assert consumer.seeks == [(0, 42), (1, -2)]


def test_rewind_refuses_an_unknown_committed_offset() -> None:
    from rayml.delivery.transactions import rewind_positions

    error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
    consumer = SeekingConsumer({0: (-1001, error)})
    with pytest.raises(KafkaException):
        rewind_positions(consumer, {("in", 0)})
    assert consumer.seeks == [], "never to the beginning: that would redo the whole partition"


def test_a_fatal_error_reported_as_a_system_error_by_flush_is_still_fatal() -> None:
    """confluent-kafka: a delivery callback run after flush() set a fatal KafkaException makes
    Python raise SystemError from it (seen when a successor fenced the producer mid-flush)."""
    txn, producer, _ = output()
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("r0"))

    def flush(_timeout: float) -> int:
        try:
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
        except KafkaException as fatal:
            raise SystemError("_delivered returned a result with an exception set") from fatal

    producer.flush = flush  # type: ignore[method-assign]
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert not txn.usable
    assert isinstance(txn.give_up(SystemError("x")), SystemError), "not a Kafka error: kept"


def test_a_record_released_without_writes_still_commits_its_offset_in_a_transaction() -> None:
    # An unanswerable record (the result topic refuses even its error result) is staged with
    # no writes: its offset must still be committed, inside a transaction that was begun.
    txn, producer, _ = output()
    txn.track(TP, 5)
    txn.stage(TP, 5, [])
    assert producer.sent == []
    assert producer.calls.count("begin") == 1
    assert txn.commit(b"meta") == {TP: [5]}
    assert producer.committed == [[("in", 0, 6)]]
