"""Exactly-once output without a broker: staged writes, transaction offsets, aborts, fencing.

A fake transactional producer records the calls a :class:`TransactionalOutput` makes, so the
order of writes, the offsets sent with each transaction and the error classes are checked in
milliseconds. The real broker path is `tests/integration/test_exactly_once.py`.

The error paths follow the module's docstring and confluent-kafka's: a *retriable* error is
retried (for at most ``_CALL_TIMEOUT_S``, counted on a fake clock, so no test sleeps), then the
transaction is aborted; an *abortable* one (``txn_requires_abort``) aborts and the records are
redone (:class:`TransactionAbortedError`, which the ingest handles by rewinding); a *fatal* one
(fenced: librdkafka reports ``PRODUCER_FENCED`` and ``INVALID_PRODUCER_EPOCH`` as a fatal
``_FENCED``) raises :class:`ProducerFencedError`, which the ingest does not catch: its loop
crashes and Ray restarts the actor. An abort that fails for good is fatal too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from rayml.config import ExecutorSettings
from rayml.delivery import transactions
from rayml.delivery.out_records import OutRecord
from rayml.delivery.result_writer import ResultWriter
from rayml.delivery.sink import TopicTenant
from rayml.delivery.transactions import TransactionalOutput
from rayml.delivery.txn_errors import ProducerFencedError, TransactionAbortedError
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


class FakeClock:
    """``time`` for the transactions module: sleeping and failed calls advance it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeTxnProducer:
    """Records transactional calls; ``fail_next`` makes the next call of a name raise;
    ``fail_when`` makes every call of a name ask a function for its error (None: succeed).

    A failing call takes ``call_s`` on ``clock`` (a round trip that came back with an error).
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.calls: list[Any] = []
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.committed: list[list[tuple[str, int, int]]] = []
        self.delivery_error: KafkaError | None = None
        self.fail_next: dict[str, KafkaError] = {}
        self.fail_when: dict[str, Callable[[], KafkaError | None]] = {}
        self.clock = clock
        self.call_s = 1.0
        self._reports: list[Any] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        err = self.fail_next.pop(name, None)
        if err is None and name in self.fail_when:
            err = self.fail_when[name]()
        if err is not None:
            if self.clock is not None:
                self.clock.sleep(self.call_s)
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

    def __len__(self) -> int:  # writes not yet delivered, or reports not yet served
        return len(self._reports)

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


def output(
    clock: FakeClock | None = None,
) -> tuple[TransactionalOutput, FakeTxnProducer, list[tuple[str, bytes | None]]]:
    producer = FakeTxnProducer(clock)
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


def test_a_sealed_transaction_commits_what_it_had_and_the_next_one_takes_what_came_after() -> None:
    """The periodic commit: records released after :meth:`seal` wait (unwritten) for the next
    transaction, and the commit goes only once every write of the sealed one is delivered."""
    txn, producer, _ = output()
    for offset in (10, 11, 12):
        txn.track(TP, offset)
    assert not txn.seal()  # nothing to commit: nothing sealed
    txn.stage(TP, 10, rec("r10"))
    assert txn.seal()
    txn.stage(TP, 11, rec("r11"))
    assert [v for _, v, _ in producer.sent] == [b"r10"]  # r11 is held, not in the sealed one
    assert txn.held == 1
    assert not txn.delivered()  # r10's report not served yet
    producer.flush(0)  # the loop's producer.poll serves it
    assert txn.delivered()
    assert txn.commit(b"meta", sealed_only=True) == {TP: [10]}
    assert producer.committed == [[("in", 0, 11)]]  # not 12: r11 is not in it
    assert not txn.sealed
    assert [v for _, v, _ in producer.sent] == [b"r10", b"r11"]  # r11 opened the next one
    assert producer.calls.count("begin") == 2
    txn.stage(TP, 12, rec("r12"))
    assert txn.commit(b"meta") == {TP: [11, 12]}
    assert producer.committed[-1] == [("in", 0, 13)]


def test_a_commit_of_everything_writes_what_is_held_into_the_sealed_transaction() -> None:
    """Revocation, drain, shutdown: the commit covers every released record, sealed or not."""
    txn, producer, _ = output()
    for offset in (10, 11):
        txn.track(TP, offset)
    txn.track(TP1, 0)
    txn.stage(TP, 10, rec("r10"))
    txn.seal()
    txn.stage(TP, 11, rec("r11"))
    txn.stage(TP1, 0, rec("p0"))
    assert txn.commit(b"meta") == {TP: [10, 11], TP1: [0]}
    assert producer.committed == [[("in", 0, 12), ("in", 1, 1)]]
    assert producer.calls.count("begin") == 1  # one transaction
    assert not txn.dirty


def test_an_aborted_sealed_transaction_drops_what_was_held_for_the_redo() -> None:
    txn, producer, failed = output()
    for offset in (10, 11):
        txn.track(TP, offset)
    txn.stage(TP, 10, rec("r10"))
    txn.seal()
    txn.stage(TP, 11, rec("r11"))
    producer.delivery_error = KafkaError(KafkaError._MSG_TIMED_OUT)
    producer.flush(0)
    assert txn.delivered()  # a failed write: the commit aborts at once, no wait
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta", sealed_only=True)
    assert failed == [("out", b"r10")]
    assert txn.held == 0
    assert [v for _, v, _ in producer.sent] == [b"r10"]  # r11 was never written
    assert not txn.dirty  # the rewind redoes both
    assert not txn.sealed
    assert producer.committed == []


def test_forgotten_partitions_lose_what_is_held_for_them() -> None:
    txn, producer, _ = output()
    txn.track(TP, 10)
    txn.track(TP1, 0)
    txn.stage(TP, 10, rec("r10"))
    txn.seal()
    txn.stage(TP1, 0, rec("p0"))
    txn.forget({TP1})  # revoked: its next owner redoes it
    producer.flush(0)
    assert txn.commit(b"meta", sealed_only=True) == {TP: [10]}
    assert [v for _, v, _ in producer.sent] == [b"r10"]
    assert not txn.dirty


def test_a_seal_whose_reports_never_come_is_committed_after_its_bound(clock: FakeClock) -> None:
    """A lost delivery report must not hold the sealed transaction (and the window) for ever:
    past 1.5 times outside_timeout_s the commit's own bounded waits decide, as before sealing."""
    txn, producer, _ = output()
    txn.track(TP, 10)
    txn.stage(TP, 10, rec("r10"))
    txn.seal()
    clock.now += 1.5 * 5.0  # output()'s outside_timeout_s: the default 5 s
    assert not txn.delivered()  # the report is not served: not yet
    clock.now += 0.01
    assert txn.delivered()
    assert txn.commit(b"meta", sealed_only=True) == {TP: [10]}  # its flush got the report
    assert producer.committed == [[("in", 0, 11)]]
    assert txn.sealed_s == pytest.approx(7.51)


def sealed_and_delivered(txn: TransactionalOutput, producer: FakeTxnProducer) -> None:
    """r10 in the sealed transaction, acknowledged; r11 released after the seal (held)."""
    for offset in (10, 11):
        txn.track(TP, offset)
    txn.stage(TP, 10, rec("r10"))
    txn.seal()
    txn.stage(TP, 11, rec("r11"))
    producer.flush(0)


def test_the_sealed_transaction_commits_on_the_commit_thread_while_the_loop_goes_on() -> None:
    txn, producer, _ = output()
    gate, threads = threading.Event(), []
    commit = producer.commit_transaction

    def held_commit(timeout: float) -> None:
        threads.append(threading.current_thread())
        assert gate.wait(10)
        commit(timeout)

    producer.commit_transaction = held_commit  # type: ignore[method-assign]
    sealed_and_delivered(txn, producer)
    assert txn.begin_commit(b"meta")
    assert txn.committing
    assert not txn.begin_commit(b"meta")  # one at a time
    txn.track(TP, 12)
    txn.stage(TP, 12, rec("r12"))  # the loop goes on: released meanwhile, held
    assert not txn.commit_finished
    assert [v for _, v, _ in producer.sent] == [b"r10"]
    gate.set()
    assert txn.finish_commit() == {TP: [10]}
    assert producer.committed == [[("in", 0, 11)]]
    assert threads[0] is not threading.current_thread()
    assert not txn.committing
    assert [v for _, v, _ in producer.sent] == [b"r10", b"r11", b"r12"]  # the next one
    assert txn.commit(b"meta") == {TP: [11, 12]}
    assert producer.committed[-1] == [("in", 0, 13)]


@pytest.mark.parametrize(
    "why", ["not sealed", "report not served", "a write failed", "nothing in it", "fenced"]
)
def test_a_commit_is_begun_on_the_thread_only_when_nothing_is_left_to_wait_for(why: str) -> None:
    txn, producer, _ = output()
    txn.track(TP, 10)
    if why != "nothing in it":
        txn.stage(TP, 10, rec("r10"))
    if why == "a write failed":
        producer.delivery_error = KafkaError(KafkaError._MSG_TIMED_OUT)
    if why != "not sealed":
        txn.seal()
    if why != "report not served":
        producer.flush(0)
    if why == "fenced":
        txn.usable = False
    assert not txn.begin_commit(b"meta")
    assert not txn.committing


def test_a_full_commit_waits_for_the_one_on_the_thread_and_returns_both_in_order() -> None:
    txn, producer, _ = output()
    sealed_and_delivered(txn, producer)
    assert txn.begin_commit(b"meta")
    assert txn.commit(b"meta") == {TP: [10, 11]}  # a revocation, say: r11 held, now in too
    assert producer.committed == [[("in", 0, 11)], [("in", 0, 12)]]
    assert not txn.dirty


def test_an_abortable_error_on_the_thread_aborts_and_drops_what_was_held() -> None:
    txn, producer, _ = output()
    sealed_and_delivered(txn, producer)
    producer.fail_next["commit"] = KafkaError(KafkaError.INVALID_TXN_STATE, txn_requires_abort=True)
    assert txn.begin_commit(b"meta")
    with pytest.raises(TransactionAbortedError):
        txn.finish_commit()
    assert "abort" in producer.calls
    assert not txn.dirty  # r11 dropped with the rest: the rewind redoes both
    assert not txn.sealed
    assert [v for _, v, _ in producer.sent] == [b"r10"]


def test_a_fatal_error_on_the_thread_is_fatal() -> None:
    txn, producer, _ = output()
    sealed_and_delivered(txn, producer)
    producer.fail_next["commit"] = KafkaError(KafkaError._FENCED, fatal=True)
    assert txn.begin_commit(b"meta")
    with pytest.raises(ProducerFencedError):
        txn.finish_commit()
    assert not txn.usable


def test_an_abort_after_a_commit_that_went_through_on_the_thread_aborts_nothing() -> None:
    """A rewind (a lost partition, say) while a commit was under way: the abort waits for it;
    committed, it leaves nothing open to abort, and what was held is dropped (redone)."""
    txn, producer, _ = output()
    sealed_and_delivered(txn, producer)
    assert txn.begin_commit(b"meta")
    txn.abort()
    assert producer.committed == [[("in", 0, 11)]]
    assert "abort" not in producer.calls
    assert txn.commits == 1
    assert not txn.dirty
    assert not txn.committing


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
        tenants={"in": TopicTenant("default", "out")},
        dlq_topic="dlq",
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


# --- error paths, call by call (a fake clock: no test waits) --------------------------------

RETRIABLE = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True)
ABORTABLE = KafkaError(KafkaError._STATE, txn_requires_abort=True)
# librdkafka reports PRODUCER_FENCED and INVALID_PRODUCER_EPOCH as a fatal _FENCED.
FENCED = KafkaError(KafkaError._FENCED, fatal=True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(
        transactions,
        "time",
        SimpleNamespace(monotonic=fake.monotonic, perf_counter=fake.monotonic, sleep=fake.sleep),
    )
    return fake


def always(err: KafkaError) -> Callable[[], KafkaError]:
    return lambda: err


def one_record(txn: TransactionalOutput, offset: int = 0, tp: tuple[str, int] = TP) -> None:
    txn.track(tp, offset)
    txn.stage(tp, offset, rec(f"r{offset}"))


def redo(txn: TransactionalOutput, offset: int) -> None:
    """What the ingest does after a TransactionAbortedError: forget, re-read, stage again."""
    txn.forget({TP})
    one_record(txn, offset)


def test_the_retry_bound_is_the_documented_30_seconds() -> None:
    assert transactions._CALL_TIMEOUT_S == 30.0  # docs/architecture.md: "(30 s bound)"


def test_a_retriable_begin_is_retried_and_the_transaction_goes_on(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    producer.fail_next["begin"] = RETRIABLE
    one_record(txn)
    assert producer.calls[1:] == ["begin", "begin", "produce"]
    assert txn.commit(b"meta") == {TP: [0]}
    assert producer.committed == [[("in", 0, 1)]]
    assert "abort" not in producer.calls


def test_a_begin_retried_in_vain_gives_up_at_the_bound_and_redoes_without_an_abort(
    clock: FakeClock,
) -> None:
    txn, producer, _ = output(clock)
    producer.fail_when["begin"] = always(RETRIABLE)
    started = clock.now
    one_record(txn)  # in a completion callback: nothing raised here
    waited = clock.now - started
    bound = transactions._CALL_TIMEOUT_S
    assert bound <= waited <= bound + producer.call_s, "retried until the bound, not beyond"
    assert producer.calls.count("begin") > 1
    assert producer.sent == []
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    # Nothing was begun: librdkafka refuses abort_transaction() outside a transaction.
    assert "abort" not in producer.calls
    assert txn.usable
    assert not txn.dirty
    del producer.fail_when["begin"]
    redo(txn, 0)
    assert txn.commit(b"meta") == {TP: [0]}
    assert producer.committed == [[("in", 0, 1)]]


def test_a_fatal_begin_fences_the_producer_and_nothing_is_produced_or_committed() -> None:
    txn, producer, _ = output()
    producer.fail_next["begin"] = FENCED
    one_record(txn)
    assert producer.calls.count("begin") == 1, "a fatal error is not retried"
    assert producer.sent == []
    assert not txn.usable
    with pytest.raises(ProducerFencedError) as raised:
        txn.commit(b"meta")
    assert raised.value.cause.code() == KafkaError._FENCED
    assert "abort" not in producer.calls
    assert producer.committed == []


def test_a_fatal_error_flagged_retriable_too_is_not_retried() -> None:
    txn, producer, _ = output()
    producer.fail_next["commit"] = KafkaError(KafkaError._FENCED, fatal=True, retriable=True)
    one_record(txn)
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert producer.calls.count("commit") == 1
    assert "abort" not in producer.calls


def test_send_offsets_that_require_an_abort_abort_and_the_redo_commits() -> None:
    txn, producer, failed = output()
    one_record(txn)
    producer.fail_next["send_offsets"] = ABORTABLE
    with pytest.raises(TransactionAbortedError) as raised:
        txn.commit(b"meta")
    assert raised.value.cause is not None
    assert producer.calls[-2:] == ["send_offsets", "abort"]
    assert "commit" not in producer.calls
    assert producer.committed == []
    assert failed == [], "not a failed write: the redo is unchanged"
    assert txn.usable
    redo(txn, 0)
    assert txn.commit(b"meta") == {TP: [0]}
    assert producer.committed == [[("in", 0, 1)]]


def test_fatal_send_offsets_fence_the_producer_without_an_abort() -> None:
    txn, producer, _ = output()
    one_record(txn)
    producer.fail_next["send_offsets"] = FENCED
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert "abort" not in producer.calls
    assert "commit" not in producer.calls
    assert not txn.usable
    txn.track(TP, 1)
    txn.stage(TP, 1, rec("r1"))
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert producer.committed == []


def test_a_retriable_commit_is_retried_until_it_succeeds(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    one_record(txn)
    failures = iter([RETRIABLE, RETRIABLE, RETRIABLE])
    producer.fail_when["commit"] = lambda: next(failures, None)
    assert txn.commit(b"meta") == {TP: [0]}
    assert producer.calls.count("commit") == 4
    assert producer.calls.count("send_offsets") == 1, "only the failed call is repeated"
    assert producer.committed == [[("in", 0, 1)]]
    assert "abort" not in producer.calls
    assert txn.commits == 1


def test_a_commit_retried_in_vain_stops_at_the_bound_and_aborts(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    one_record(txn)
    producer.fail_when["commit"] = always(RETRIABLE)
    started = clock.now
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    bound = transactions._CALL_TIMEOUT_S
    # The commit's retries end at the bound; the abort that follows succeeds at once.
    assert bound <= clock.now - started <= bound + producer.call_s
    assert producer.calls[-1] == "abort"
    assert producer.committed == []
    assert txn.usable
    assert txn.commit_s == pytest.approx(clock.now - started), "the loop's time in commits"


def test_an_abort_refused_by_a_commit_waiting_to_be_resumed_is_fatal_at_once(
    clock: FakeClock,
) -> None:
    """librdkafka keeps a commit_transaction() that failed retriably open to be resumed, and
    refuses the abort that follows with _CONFLICT (flagged retriable): retrying that abort for
    30 s more cannot end it; the producer is given up on (the actor restarts and redoes)."""
    txn, producer, _ = output(clock)
    one_record(txn)
    producer.fail_when["commit"] = always(RETRIABLE)
    producer.fail_when["abort"] = always(
        KafkaError(KafkaError._CONFLICT, "Conflicting commit_transaction API call", retriable=True)
    )
    started = clock.now
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert producer.calls.count("abort") == 1, "not retried"
    assert clock.now - started <= transactions._CALL_TIMEOUT_S + 2 * producer.call_s
    assert not txn.usable
    assert producer.committed == []


def test_a_commit_that_times_out_aborts_and_the_records_are_redone(clock: FakeClock) -> None:
    # librdkafka fails a commit_transaction() that ran out of time as abortable
    # (rd_kafka_txn_curr_api_abort_timeout_cb: _TIMED_OUT with txn_requires_abort).
    txn, producer, _ = output(clock)
    one_record(txn)
    producer.fail_next["commit"] = KafkaError(KafkaError._TIMED_OUT, txn_requires_abort=True)
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert producer.calls.count("commit") == 1, "abortable: not retried"
    assert producer.calls[-1] == "abort"
    redo(txn, 0)
    assert txn.commit(b"meta") == {TP: [0]}


def test_a_commit_still_failing_past_the_transaction_timeout_is_fenced(clock: FakeClock) -> None:
    # Past transaction.timeout.ms the broker aborts the transaction itself and bumps the
    # producer's epoch: the next EndTxn is answered PRODUCER_FENCED / INVALID_PRODUCER_EPOCH,
    # which librdkafka raises as a fatal _FENCED. Nothing may commit any more; the loop crashes
    # and the restarted actor (init_transactions) redoes what was open.
    timeout_s = ExecutorSettings().transaction_timeout_s
    txn, producer, _ = output(clock)
    one_record(txn)
    started = clock.now
    producer.fail_when["commit"] = lambda: RETRIABLE if clock.now - started < timeout_s else FENCED
    with pytest.raises(ProducerFencedError) as raised:
        txn.commit(b"meta")
    assert not isinstance(raised.value, TransactionAbortedError), "the ingest must not rewind"
    assert producer.calls.count("commit") > 1, "retried while the transaction could live"
    assert timeout_s <= clock.now - started < transactions._CALL_TIMEOUT_S
    assert "abort" not in producer.calls, "a fenced producer cannot abort"
    assert not txn.usable
    assert producer.committed == []
    named = txn.give_up(raised.value)
    assert isinstance(named, ProducerFencedError)
    assert "abort" not in producer.calls


def abortable_commit(txn: TransactionalOutput, producer: FakeTxnProducer) -> None:
    one_record(txn)
    producer.fail_next["commit"] = ABORTABLE


def test_a_retriable_abort_is_retried(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    abortable_commit(txn, producer)
    producer.fail_next["abort"] = RETRIABLE
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert producer.calls.count("abort") == 2
    assert txn.usable
    redo(txn, 0)
    assert txn.commit(b"meta") == {TP: [0]}


def test_an_abort_retried_in_vain_is_fatal_at_the_bound(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    abortable_commit(txn, producer)
    producer.fail_when["abort"] = always(RETRIABLE)
    started = clock.now
    with pytest.raises(ProducerFencedError) as raised:
        txn.commit(b"meta")
    # Not TransactionAbortedError: the ingest does not rewind, its loop crashes (the actor
    # exits and Ray restarts it, whose init_transactions aborts what this one left open).
    assert not isinstance(raised.value, TransactionAbortedError)
    bound = transactions._CALL_TIMEOUT_S
    assert bound <= clock.now - started <= bound + 2 * producer.call_s
    assert producer.calls.count("abort") > 1
    assert not txn.usable
    aborts = producer.calls.count("abort")
    assert txn.give_up(raised.value) is raised.value
    assert producer.calls.count("abort") == aborts, "giving up tries no further abort"
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert producer.committed == []


def test_a_fatal_abort_gives_up_at_once(clock: FakeClock) -> None:
    txn, producer, _ = output(clock)
    abortable_commit(txn, producer)
    producer.fail_next["abort"] = FENCED
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert producer.calls.count("abort") == 1
    assert not txn.usable
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")


@pytest.mark.parametrize("call", ["begin", "produce", "send_offsets", "commit"])
def test_fenced_in_any_transactional_call_stops_everything(call: str) -> None:
    txn, producer, _ = output()
    producer.fail_next[call] = FENCED
    one_record(txn)
    with pytest.raises(ProducerFencedError) as raised:
        txn.commit(b"meta")
    assert raised.value.transactional_id == "g.ingest-0"
    assert raised.value.cause.code() == KafkaError._FENCED
    assert not txn.usable
    assert "abort" not in producer.calls
    assert producer.committed == []
    assert isinstance(txn.give_up(raised.value), ProducerFencedError)
    assert "abort" not in producer.calls


def test_fenced_raised_by_the_commit_flush_is_fatal() -> None:
    """confluent-kafka raises a fatal error from flush() too (not only from the txn calls)."""
    txn, producer, _ = output()
    one_record(txn)

    def flush(_timeout: float) -> int:
        raise KafkaException(FENCED)

    producer.flush = flush  # type: ignore[method-assign]
    with pytest.raises(ProducerFencedError):
        txn.commit(b"meta")
    assert not txn.usable
    assert "abort" not in producer.calls


def test_an_abortable_error_in_produce_aborts_at_the_next_commit() -> None:
    txn, producer, failed = output()
    producer.fail_next["produce"] = ABORTABLE
    one_record(txn)  # in a completion callback: nothing raised here
    assert txn.usable
    assert txn.dirty
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert producer.calls[-1] == "abort"
    assert failed == [("out", b"r0")], "the writer is told, as of a failed delivery"
    assert producer.committed == []


def test_an_abortable_error_wrapped_in_a_system_error_by_flush_aborts() -> None:
    txn, producer, _ = output()
    one_record(txn)

    def flush(_timeout: float) -> int:
        try:
            raise KafkaException(ABORTABLE)
        except KafkaException as abortable:
            raise SystemError("_delivered returned a result with an exception set") from abortable

    producer.flush = flush  # type: ignore[method-assign]
    with pytest.raises(TransactionAbortedError):
        txn.commit(b"meta")
    assert producer.calls[-1] == "abort"
    assert txn.usable


def test_a_system_error_without_a_kafka_cause_crashes_and_the_crash_aborts() -> None:
    txn, producer, _ = output()
    one_record(txn)

    def flush(_timeout: float) -> int:
        raise SystemError("a bug, not Kafka")

    producer.flush = flush  # type: ignore[method-assign]
    with pytest.raises(SystemError) as raised:
        txn.commit(b"meta")
    assert "abort" not in producer.calls
    # The loop crashes on it; giving up aborts the open transaction so that read_committed
    # readers need not wait for the broker's transaction timeout.
    assert txn.give_up(raised.value) is raised.value
    assert producer.calls[-1] == "abort"
    assert not txn.usable
    assert producer.committed == []


def test_a_fatal_error_in_the_implicit_context_of_a_crash_is_named() -> None:
    """The loop's poll() can raise SystemError while handling a fatal KafkaException
    (``__context__``, not ``__cause__``): giving up still names it fenced, and aborts nothing."""
    txn, producer, _ = output()
    one_record(txn)
    try:
        try:
            raise KafkaException(FENCED)
        except KafkaException:
            raise SystemError("poll returned a result with an exception set")  # noqa: B904
    except SystemError as crash:
        named = txn.give_up(crash)
    assert isinstance(named, ProducerFencedError)
    assert named.cause.code() == KafkaError._FENCED
    assert "abort" not in producer.calls


def test_an_error_of_no_transactional_class_is_fatal_not_a_rewind_loop() -> None:
    """confluent-kafka: an error from a transactional call that is neither retriable, abortable
    nor fatal is to be treated as fatal; rewinding would only fail the same way again."""
    txn, producer, _ = output()
    producer.fail_next["begin"] = KafkaError(KafkaError._INVALID_ARG)
    one_record(txn)
    assert not txn.usable
    with pytest.raises(ProducerFencedError) as raised:
        txn.commit(b"meta")
    assert raised.value.cause.code() == KafkaError._INVALID_ARG
    assert "abort" not in producer.calls


class FakePlainProducer:
    """The producer outside the transaction: ``poll`` delivers what was produced, with
    ``delivery_error``, unless ``hold`` keeps the reports back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.delivery_error: KafkaError | None = None
        self.hold = False  # the writes are in flight: no report yet
        self.polls = 0
        self._reports: list[Any] = []

    def produce(
        self, topic: str, *, value: bytes, key: bytes | None, headers: Any, on_delivery: Any
    ) -> None:
        self.sent.append((topic, value))
        self._reports.append((on_delivery, _Msg(topic, key)))

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        if self.hold:
            return 0
        return self.deliver()

    def deliver(self) -> int:
        reports, self._reports = self._reports, []
        for callback, msg in reports:
            callback(self.delivery_error, msg)
        return 0


def _split_output() -> tuple[
    TransactionalOutput, FakeTxnProducer, FakePlainProducer, list[tuple[str, bytes | None]]
]:
    """An output whose transaction spans "out" and "dlq"; any other topic is written outside."""
    producer, outside = FakeTxnProducer(), FakePlainProducer()
    failed: list[tuple[str, bytes | None]] = []
    txn = TransactionalOutput(
        producer,  # type: ignore[arg-type]
        "g.ingest-0",
        on_failed_delivery=lambda topic, key, _err: failed.append((topic, key)),
        owner="test",
        own_topics=frozenset({"out", "dlq"}),
        outside=outside,  # type: ignore[arg-type]
        outside_timeout_s=0.05,
    )
    txn.start()
    return txn, producer, outside, failed


def _reply(name: str, topic: str = "replies.a") -> list[OutRecord]:
    return [OutRecord(topic, name.encode(), name.encode(), None)]


def test_a_reply_topic_is_written_outside_the_transaction_and_acknowledged_before_its_offset() -> (
    None
):
    """Markers go only to rayml's own topics: a reply topic that refuses them can never leave
    the transaction (and the ingest's transactional.id) half-ended."""
    txn, producer, outside, _ = _split_output()
    for offset, records in ((0, rec("a")), (1, _reply("b")), (2, _reply("c") + rec("dlq-c"))):
        txn.track(TP, offset)
        txn.stage(TP, offset, records)
    assert [t for t, _, _ in producer.sent] == ["out", "out"], "own topics in the transaction"
    assert outside.sent == [("replies.a", b"b"), ("replies.a", b"c")]
    assert producer.calls.count("begin") == 1
    assert txn.commit(None) == {TP: [0, 1, 2]}
    assert outside.polls >= 1, "acknowledged before the offsets commit"
    assert producer.committed == [[("in", 0, 3)]]
    assert txn.outside_writes.written == 2


def test_a_record_answered_only_outside_still_commits_its_offset_in_a_transaction() -> None:
    txn, producer, outside, _ = _split_output()
    txn.track(TP, 7)
    txn.stage(TP, 7, _reply("x"))
    assert outside.sent == [("replies.a", b"x")]
    assert producer.sent == []
    assert producer.calls == ["init", "begin"], "a transaction to carry the offset"
    assert txn.commit(None) == {TP: [7]}
    assert producer.committed == [[("in", 0, 8)]]


def test_a_failed_write_outside_aborts_the_transaction_and_says_which_topic() -> None:
    txn, producer, outside, failed = _split_output()
    outside.delivery_error = KafkaError(KafkaError.INVALID_TIMESTAMP)
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("a"))
    txn.track(TP, 1)
    txn.stage(TP, 1, _reply("b"))
    with pytest.raises(TransactionAbortedError):
        txn.commit(None)
    assert failed == [("replies.a", b"b")], "the writer learns, so the redo goes elsewhere"
    assert producer.committed == []
    assert "abort" in producer.calls


def test_writes_outside_not_acknowledged_in_time_abort_naming_their_topic() -> None:
    """A reply topic that never acknowledges (e.g. ``min.insync.replicas`` above its replicas)
    fails the commit within the outside producer's timeout, and the writer learns which topic
    it was, so the redo can go elsewhere; the late report of that write is ignored."""
    txn, producer, outside, failed = _split_output()
    outside.hold = True
    txn.track(TP, 0)
    txn.stage(TP, 0, _reply("slow"))
    in_flight = list(outside._reports)
    with pytest.raises(TransactionAbortedError, match="not acknowledged"):
        txn.commit(None)
    assert failed == [("replies.a", b"slow")], "the writer is told the topic"
    # The report of the aborted transaction's write arrives late, failed: not the next one's.
    for callback, msg in in_flight:
        callback(KafkaError(KafkaError._MSG_TIMED_OUT), msg)
    assert failed == [("replies.a", b"slow")]
    outside.hold = False
    outside._reports = []
    txn.forget({TP})
    txn.track(TP, 0)
    txn.stage(TP, 0, rec("redone on the result topic"))
    assert txn.commit(None) == {TP: [0]}
    assert producer.committed == [[("in", 0, 1)]]


def test_a_transaction_that_aborts_anyway_does_not_wait_for_writes_outside() -> None:
    txn, producer, outside, _ = _split_output()
    outside.hold = True
    txn.track(TP, 0)
    txn.stage(TP, 0, _reply("slow"))
    producer.delivery_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    txn.track(TP, 1)
    txn.stage(TP, 1, rec("big"))
    producer.flush(0)  # the inside write's report: it failed
    with pytest.raises(TransactionAbortedError):
        txn.commit(None)
    assert outside.polls == 0


def test_a_write_outside_purged_by_librdkafka_is_not_taken_as_written() -> None:
    """librdkafka purges a failed producer's queue itself: such a report means not written."""
    txn, producer, outside, failed = _split_output()
    outside.delivery_error = KafkaError(KafkaError._PURGE_QUEUE)
    txn.track(TP, 0)
    txn.stage(TP, 0, _reply("gone"))
    with pytest.raises(TransactionAbortedError):
        txn.commit(None)
    assert failed == [("replies.a", b"gone")]
    assert producer.committed == []


def test_a_fatal_error_of_the_producer_outside_stops_the_output_and_blames_no_topic() -> None:
    txn, producer, outside, failed = _split_output()
    outside.delivery_error = KafkaError(KafkaError._FATAL, fatal=True)
    txn.track(TP, 0)
    txn.stage(TP, 0, _reply("x"))
    with pytest.raises((TransactionAbortedError, ProducerFencedError)):
        txn.commit(None)
    assert failed == [], "no reply topic is blamed for a broken producer"
    assert not txn.usable
    with pytest.raises(ProducerFencedError):
        txn.commit(None)
    assert producer.committed == []
