"""ConsumerLoop, the consumer-group skeleton of the ingest and the job runner, on scripted
consumers: rebalance handling, paused polling, and a record returned before a rebalance callback.

``_poll`` returns the first record of a poll at once and takes the rest with ``consume()``.
A rebalance callback may run inside that ``consume()``: librdkafka then drops the fetched
records of the partitions it revoked or rewound, but not the one ``poll()`` already returned.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from rayml.delivery.consumer_loop import ConsumerLoop, LoopCounters, rewind_positions
from tests.support.fake_records import Record


def polling(first: Record, rest: list[Record], callback_moves: set[tuple[str, int]]) -> Any:
    """A stand-in for a consumer-group member: its consumer runs a callback that moves
    ``callback_moves``."""
    ingest = SimpleNamespace(_unsettled=set())

    def consume(limit: int, timeout: float) -> list[Record]:
        ingest._unsettled |= callback_moves  # what _on_revoke / _on_lost / _rewind record
        return rest

    ingest.consumer = SimpleNamespace(poll=lambda timeout: first, consume=consume)
    return ingest


def test_the_first_record_of_a_partition_moved_during_the_poll_is_not_taken() -> None:
    ingest = polling(Record(1, 10), [Record(0, 5)], callback_moves={("in", 1)})
    got = ConsumerLoop._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(0, 5)]


def test_records_of_other_partitions_are_all_taken() -> None:
    ingest = polling(Record(1, 10), [Record(1, 11), Record(0, 5)], callback_moves={("in", 2)})
    got = ConsumerLoop._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(1, 10), (1, 11), (0, 5)]


def test_a_move_before_this_poll_does_not_drop_its_first_record() -> None:
    ingest = polling(Record(1, 10), [], callback_moves=set())
    ingest._unsettled = {("in", 1)}  # revoked and assigned again before this poll began
    got = ConsumerLoop._poll(ingest, limit=10, timeout=0.1)  # type: ignore[arg-type]
    assert [(r.partition(), r.offset()) for r in got] == [(1, 10)]


# --- the skeleton's rebalance handling, against a recording consumer --------------------------


class RecordingConsumer:
    """Records pause/resume/commit calls; ``consume`` hands out scripted records."""

    def __init__(self, records: list[Record] | None = None) -> None:
        self.records = records or []
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []
        self.committed: list[tuple[str, int, int]] = []
        self.sent_async: list[tuple[str, int, int]] = []

    def consume(self, limit: int, timeout: float) -> list[Record]:
        out, self.records = self.records[:limit], self.records[limit:]
        return out

    def pause(self, partitions: list[Any]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions: list[Any]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]

    def assignment(self) -> list[Any]:
        return []

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any] | None:
        self.committed += [(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous:
            self.sent_async += [(tp.topic, tp.partition, tp.offset) for tp in offsets]
            return None  # confluent-kafka: the outcome goes to on_commit, in a later poll
        return [
            SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=tp.offset, error=None)
            for tp in offsets
        ]


class Member(ConsumerLoop):
    """A member whose drain can be made to fail, recording what it let go of."""

    def __init__(self, consumer: RecordingConsumer, fail_settle: bool = False) -> None:
        super().__init__(consumer, "in", "member=m", LoopCounters())  # type: ignore[arg-type]
        self.fail_settle = fail_settle
        self.let_go_of: list[set[tuple[str, int]]] = []

    def settle_revoked(self, revoked: set[tuple[str, int]]) -> None:
        if self.fail_settle:
            raise RuntimeError("drain failed")
        super().settle_revoked(revoked)

    def let_go(self, tps: set[tuple[str, int]]) -> None:
        self.let_go_of.append(set(tps))


def tps(*partitions: int) -> list[Any]:
    return [SimpleNamespace(topic="in", partition=p) for p in partitions]


def test_poll_tracks_records_and_drops_error_events() -> None:
    eof = SimpleNamespace(code=lambda: -191)  # KafkaError._PARTITION_EOF
    consumer = RecordingConsumer(
        [Record(0, 5, value=b"abc"), Record(0, 6, error=eof), Record(1, 7, value=None)]
    )
    member = Member(consumer)
    got = member.poll(10, 0.0)
    assert [(tp, offset) for _msg, tp, offset in got] == [(("in", 0), 5), (("in", 1), 7)]
    assert member.tracker.in_flight() == 2
    assert member.counters.polled == 2
    # Each tracked record weighs its value's length (a tombstone nothing) until it is done.
    assert member.tracker.in_flight_bytes() == member.counters.polled_bytes == 3
    member.tracker.done(("in", 0), 5)
    assert member.tracker.in_flight_bytes() == 0


def test_a_record_read_while_paused_is_kept_and_pauses_its_partition() -> None:
    consumer = RecordingConsumer([Record(2, 9)])
    member = Member(consumer)
    member.counters.paused = True
    got = member.poll(1, 0.0)
    assert [(tp, offset) for _msg, tp, offset in got] == [(("in", 2), 9)]
    assert consumer.paused == [("in", 2)]


def test_assignment_gets_the_members_pause_state_either_way() -> None:
    consumer = RecordingConsumer()
    member = Member(consumer)
    member._on_assign(consumer, tps(0))
    assert consumer.resumed == [("in", 0)]  # a partition let go of while paused comes back
    member.counters.paused = True
    member._on_assign(consumer, tps(1))
    assert consumer.paused == [("in", 1)]
    assert member.assignment_names() == ["in[0]", "in[1]"]


def test_revoke_commits_the_revoked_watermark_then_lets_go() -> None:
    consumer = RecordingConsumer([Record(0, 0), Record(0, 1), Record(1, 0)])
    member = Member(consumer)
    member._on_assign(consumer, tps(0, 1))
    member.poll(10, 0.0)
    member.tracker.done(("in", 0), 0)  # offset 1 of partition 0 is still unfinished
    member._on_revoke(consumer, tps(0))
    assert consumer.committed == [("in", 0, 1)]
    assert member.let_go_of == [{("in", 0)}]
    assert member.assignment_names() == ["in[1]"]
    assert member.tracker.in_flight() == 1  # only partition 1's record is still tracked


def test_revoke_lets_go_even_when_the_drain_raises() -> None:
    consumer = RecordingConsumer([Record(0, 0)])
    member = Member(consumer, fail_settle=True)
    member._on_assign(consumer, tps(0))
    member.poll(10, 0.0)
    with pytest.raises(RuntimeError, match="drain failed"):
        member._on_revoke(consumer, tps(0))
    assert consumer.committed == []
    assert member.let_go_of == [{("in", 0)}]
    assert member.assignment_names() == []
    assert member.tracker.in_flight() == 0


def test_a_commit_without_waiting_is_committed_when_the_broker_says_so() -> None:
    consumer = RecordingConsumer([Record(0, 0), Record(0, 1)])
    member = Member(consumer)
    member._on_assign(consumer, tps(0))
    member.poll(10, 0.0)
    member.tracker.done(("in", 0), 0)
    member.commit(wait=False)
    assert consumer.sent_async == [("in", 0, 1)]
    # Not committed until the answer: the next commit would carry the offset again.
    assert member.tracker.committable() == {("in", 0): 1}
    assert member.counters.commits == 0
    refused = SimpleNamespace(topic="in", partition=0, offset=1, error="REBALANCE_IN_PROGRESS")
    member.on_commit(None, [refused])  # type: ignore[list-item]
    assert member.tracker.committable() == {("in", 0): 1}  # still owed
    member.on_commit("request timed out", [])
    assert member.tracker.committable() == {("in", 0): 1}
    accepted = SimpleNamespace(topic="in", partition=0, offset=1, error=None)
    member.on_commit(None, [accepted])  # type: ignore[list-item]
    assert member.tracker.committable() == {}
    assert member.counters.commits == 1
    older = SimpleNamespace(topic="in", partition=0, offset=0, error=None)
    member.tracker.done(("in", 0), 1)
    member.on_commit(None, [older])  # type: ignore[list-item]  # a late answer changes nothing
    assert member.tracker.committable() == {("in", 0): 2}


def test_a_revocation_commits_and_waits_even_where_the_periodic_commit_does_not() -> None:
    consumer = RecordingConsumer([Record(0, 0)])
    member = Member(consumer)
    member._on_assign(consumer, tps(0))
    member.poll(10, 0.0)
    member.tracker.done(("in", 0), 0)
    member._on_revoke(consumer, tps(0))
    assert consumer.committed == [("in", 0, 1)]
    assert consumer.sent_async == []


def test_a_revocation_after_an_unanswered_commit_commits_the_watermark_again() -> None:
    consumer = RecordingConsumer([Record(0, 0), Record(0, 1)])
    member = Member(consumer)
    member._on_assign(consumer, tps(0))
    member.poll(10, 0.0)
    member.tracker.done(("in", 0), 0)
    member.commit(wait=False)  # its answer has not come when the partition is revoked
    member.tracker.done(("in", 0), 1)
    member._on_revoke(consumer, tps(0))
    assert consumer.sent_async == [("in", 0, 1)]
    # The synchronous commit carries the latest watermark, whatever the async one became.
    assert consumer.committed[-1] == ("in", 0, 2)


def test_lost_partitions_are_let_go_of_without_a_commit() -> None:
    consumer = RecordingConsumer([Record(0, 0)])
    member = Member(consumer)
    member._on_assign(consumer, tps(0))
    member.poll(10, 0.0)
    member.tracker.done(("in", 0), 0)
    member._on_lost(consumer, tps(0))
    assert consumer.committed == []
    assert member.let_go_of == [{("in", 0)}]
    assert member.assignment_names() == []


# --- held topics (the ingest's lanes and tenant shares) beside the whole-assignment pause -------


class AssignedConsumer(RecordingConsumer):
    """A recording consumer whose assignment is what the member was assigned."""

    def __init__(self, records: list[Record] | None = None) -> None:
        super().__init__(records)
        self.assigned: list[Any] = []

    def assignment(self) -> list[Any]:
        return list(self.assigned)


def lanes(consumer: AssignedConsumer) -> Member:
    """A member assigned partitions 0 and 1 of "in" and of "in.batch"."""
    member = Member(consumer)
    parts = [SimpleNamespace(topic=t, partition=p) for t in ("in", "in.batch") for p in (0, 1)]
    member._on_assign(consumer, parts)
    consumer.assigned = parts
    consumer.paused, consumer.resumed = [], []
    return member


def test_holding_a_topic_pauses_its_partitions_and_letting_go_resumes_them() -> None:
    consumer = AssignedConsumer()
    member = lanes(consumer)
    member.hold(frozenset({"in.batch"}))
    assert sorted(consumer.paused) == [("in.batch", 0), ("in.batch", 1)]
    member.hold(frozenset({"in.batch"}))  # no change: no call
    assert len(consumer.paused) == 2
    member.hold(frozenset())
    assert sorted(consumer.resumed) == [("in.batch", 0), ("in.batch", 1)]
    assert member.held_topics == frozenset()


def test_the_whole_pause_and_the_held_topics_compose() -> None:
    consumer = AssignedConsumer()
    member = lanes(consumer)
    member.hold(frozenset({"in.batch"}))
    member.pause("window full")
    consumer.paused, consumer.resumed = [], []
    # Held while paused: nothing to call (everything is paused); the resume leaves it paused.
    member.hold(frozenset({"in.batch"}))
    member.resume("window half empty")
    assert sorted(consumer.resumed) == [("in", 0), ("in", 1)]
    # Let go of while paused: resumed with the rest.
    member.pause("window full")
    member.hold(frozenset())
    consumer.resumed = []
    member.resume("window half empty")
    assert sorted(consumer.resumed) == [("in", 0), ("in", 1), ("in.batch", 0), ("in.batch", 1)]


def test_a_partition_of_a_held_topic_is_assigned_paused_and_the_others_resumed() -> None:
    consumer = AssignedConsumer()
    member = Member(consumer)
    member.hold(frozenset({"in.batch"}))
    member._on_assign(consumer, [SimpleNamespace(topic="in.batch", partition=2), *tps(2)])
    assert consumer.paused == [("in.batch", 2)]
    assert consumer.resumed == [("in", 2)]


def test_a_record_read_from_a_held_topic_is_kept_and_pauses_its_partition() -> None:
    consumer = AssignedConsumer([Record(0, 4, topic="in.batch"), Record(1, 5)])
    member = lanes(consumer)
    member.hold(frozenset({"in.batch"}))
    consumer.paused = []
    got = member.poll(10, 0.0)
    assert [(tp, offset) for _msg, tp, offset in got] == [(("in.batch", 0), 4), (("in", 1), 5)]
    assert consumer.paused == [("in.batch", 0)]


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
    consumer = SeekingConsumer({0: (42, None), 1: (-1001, None), 2: (7, None)}, not_started={2})
    rewind_positions(consumer, {("in", 0), ("in", 1), ("in", 2)})
    # Partition 2 has not started fetching: it starts at its committed offset anyway.
    assert consumer.seeks == [(0, 42), (1, -2)]


def test_rewind_refuses_an_unknown_committed_offset() -> None:
    error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
    consumer = SeekingConsumer({0: (-1001, error)})
    with pytest.raises(KafkaException):
        rewind_positions(consumer, {("in", 0)})
    assert consumer.seeks == [], "never to the beginning: that would redo the whole partition"
