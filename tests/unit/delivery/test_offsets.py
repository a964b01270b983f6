"""Commit watermarks: never past unfinished work, monotonic, and at the end once all is done."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import rayml.delivery.offsets
from rayml.delivery.offsets import OffsetTracker, PartitionOffsets
from rayml.kafka.partitions import TP as TopicPartition

TP: TopicPartition = ("ml.pipeline.input", 0)
TP1: TopicPartition = ("ml.pipeline.input", 1)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.delivery.offsets).failed == 0


def tracker(*offsets: int, tp: TopicPartition = TP) -> OffsetTracker:
    t = OffsetTracker()
    for offset in offsets:
        t.track(tp, offset)
    return t


# --- examples ------------------------------------------------------------------------------


def test_nothing_is_committable_before_the_first_message_is_done() -> None:
    t = tracker(0, 1, 2)
    assert t.committable() == {}
    assert t.watermark(TP) is None
    t.done(TP, 2)
    t.done(TP, 1)
    assert t.committable() == {}
    assert t.done(TP, 0) is True
    assert t.committable() == {TP: 3}


def test_watermark_stops_at_the_first_unfinished_offset() -> None:
    t = tracker(5, 6, 7, 8)
    t.done(TP, 5)
    t.done(TP, 7)
    assert t.committable() == {TP: 6}
    t.done(TP, 6)
    assert t.committable() == {TP: 8}


def test_gaps_between_offsets_do_not_hold_the_watermark() -> None:
    # 6 and 7 were compacted away (or are transaction markers): never polled, never tracked.
    t = tracker(5, 8, 20)
    t.done(TP, 5)
    assert t.committable() == {TP: 6}  # one past the last finished offset
    t.done(TP, 8)
    assert t.committable() == {TP: 9}
    t.done(TP, 20)
    assert t.committable() == {TP: 21}  # everything done: last tracked + 1


def test_committable_only_reports_partitions_that_moved_since_the_last_commit() -> None:
    t = tracker(0, 1)
    t.track(TP1, 10)
    t.done(TP, 0)
    t.done(TP1, 10)
    assert t.committable() == {TP: 1, TP1: 11}
    assert t.committable() == {TP: 1, TP1: 11}  # looking does not consume
    t.mark_committed({TP: 1, TP1: 11})
    assert t.committable() == {}
    t.done(TP, 1)
    assert t.committable() == {TP: 2}


def test_a_late_commit_callback_does_not_move_committed_backwards() -> None:
    t = tracker(0, 1, 2)
    t.done(TP, 0)
    t.done(TP, 1)
    t.done(TP, 2)
    t.mark_committed({TP: 3})
    t.mark_committed({TP: 1})  # callback of an older async commit arrives last
    assert t.committable() == {}


def test_mark_committed_ignores_unknown_partitions() -> None:
    t = tracker(0)
    t.mark_committed({("gone", 4): 17})
    assert t.committable() == {}


def test_done_is_idempotent() -> None:
    t = tracker(0, 1, 2)
    assert t.done(TP, 1) is False
    assert t.done(TP, 1) is False
    assert t.pending(TP) == 2
    assert t.done(TP, 0) is True
    assert t.done(TP, 0) is False  # already below the watermark
    assert t.done(TP, 1) is False
    assert t.in_flight() == 1
    assert t.committable() == {TP: 2}


@pytest.mark.parametrize("offset", [4, 6, 9, 11, 100])
def test_done_of_an_untracked_offset_raises(offset: int) -> None:
    t = tracker(5, 8, 10)
    with pytest.raises(KeyError):
        t.done(TP, offset)


def test_done_below_the_watermark_is_accepted_as_already_done() -> None:
    # Documented limit: offsets the watermark passed are forgotten, so a gap offset below it
    # cannot be told from a finished one. It can hold nothing back either way.
    t = tracker(5, 8)
    t.done(TP, 5)
    t.done(TP, 8)
    assert t.done(TP, 6) is False
    assert t.committable() == {TP: 9}


def test_done_on_an_unknown_partition_raises() -> None:
    t = tracker(0)
    with pytest.raises(KeyError):
        t.done(TP1, 0)


@pytest.mark.parametrize("offset", [3, 2, -1])
def test_track_refuses_offsets_not_above_the_last(offset: int) -> None:
    t = tracker(3)
    with pytest.raises(ValueError, match="offset"):
        t.track(TP, offset)
    assert t.in_flight() == 1


def test_track_refuses_negative_offsets() -> None:
    with pytest.raises(ValueError, match="negative"):
        tracker(-1)


def test_pending_and_in_flight() -> None:
    t = tracker(0, 1, 2)
    t.track(TP1, 7)
    assert (t.pending(TP), t.pending(TP1), t.pending(("other", 0)), t.in_flight()) == (3, 1, 0, 4)
    t.done(TP, 2)
    t.done(TP1, 7)
    assert (t.pending(TP), t.pending(TP1), t.in_flight()) == (2, 0, 2)


def test_revoke_returns_final_watermarks_and_forgets() -> None:
    t = tracker(0, 1, 2)
    t.track(TP1, 5)
    t.track(("other", 0), 9)
    t.done(TP, 0)
    t.done(TP1, 5)
    t.mark_committed({TP1: 6})
    # TP moved (to 1), TP1 is already committed, "other" never moved, "nope" is unknown.
    assert t.revoke([TP, TP1, ("other", 0), ("nope", 0)]) == {TP: 1}
    assert t.in_flight() == 0
    assert t.committable() == {}
    assert t.pending(TP) == 0
    with pytest.raises(KeyError):
        t.done(TP, 1)  # a late completion for a revoked partition


def test_reset_forgets_so_tracking_may_restart_lower() -> None:
    t = tracker(10, 11)
    t.done(TP, 10)
    t.reset(TP)
    assert (t.in_flight(), t.committable(), t.watermark(TP)) == (0, {}, None)
    t.track(TP, 3)  # after a seek back
    t.done(TP, 3)
    assert t.committable() == {TP: 4}
    t.reset(("never", 0))  # unknown: no-op


def test_partition_offsets_alone() -> None:
    p = PartitionOffsets()
    assert (p.watermark, p.committed, p.pending, p.last_tracked, p.advanced) == (
        None,
        None,
        0,
        None,
        False,
    )
    p.track(3)
    p.done(3)
    assert (p.watermark, p.pending, p.last_tracked, p.advanced) == (4, 0, 3, True)
    p.mark_committed(4)
    assert (p.committed, p.advanced) == (4, False)


def test_weights_are_held_until_done_and_released_once() -> None:
    t = OffsetTracker()
    t.track(TP, 0, 100)
    t.track(TP, 1, 1_024)
    t.track(TP, 2)  # weighs nothing
    assert t.in_flight_bytes() == 1_124
    t.done(TP, 1)  # out of order: its bytes are released although the watermark waits
    assert t.in_flight_bytes() == 100
    t.done(TP, 1)
    assert t.in_flight_bytes() == 100, "a repeated done releases nothing twice"
    t.done(TP, 0)
    assert t.in_flight_bytes() == 0
    t.done(TP, 2)
    assert (t.in_flight(), t.in_flight_bytes()) == (0, 0)


def test_a_negative_size_is_refused_and_changes_nothing() -> None:
    t = tracker(0)
    with pytest.raises(ValueError, match="negative"):
        t.track(TP, 1, -10)
    assert (t.in_flight(), t.in_flight_bytes()) == (1, 0)
    t.track(TP, 1, 10)  # the refused offset may still be tracked
    assert (t.in_flight(), t.in_flight_bytes()) == (2, 10)


def test_revoke_and_reset_release_the_partitions_weights() -> None:
    t = OffsetTracker()
    t.track(TP, 0, 10)
    t.track(TP, 1, 20)
    t.track(TP1, 7, 300)
    t.done(TP, 0)
    t.revoke([TP])
    assert t.in_flight_bytes() == 300
    t.reset(TP1)
    assert t.in_flight_bytes() == 0


def test_many_messages_stay_linear() -> None:
    # 200k tracked, completed in reverse: the worst case for the done set, one big pop at the end.
    n = 200_000
    t = OffsetTracker()
    for offset in range(n):
        t.track(TP, offset)
    for offset in range(n - 1, 0, -1):
        t.done(TP, offset)
    assert t.committable() == {}
    t.done(TP, 0)
    assert t.committable() == {TP: n}


# --- properties ----------------------------------------------------------------------------

increasing_offsets = st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60).map(
    lambda gaps: [sum(gaps[: i + 1]) - 1 for i in range(len(gaps))]
)


@given(offsets=increasing_offsets, data=st.data())
def test_watermark_is_safe_monotonic_and_complete(offsets: list[int], data: st.DataObject) -> None:
    order = data.draw(st.permutations(offsets), label="completion order")
    t = tracker(*offsets)
    unfinished = set(offsets)
    previous: int | None = None
    committed = -1
    for offset in order:
        t.done(TP, offset)
        unfinished.discard(offset)
        if data.draw(st.booleans(), label="look"):
            wm = t.committable().get(TP)
            if wm is not None:
                # Never past unfinished work: committing wm says "everything below wm is handled".
                assert not unfinished or wm <= min(unfinished)
                assert previous is None or wm >= previous  # monotonic
                assert wm > committed  # reported only when it moved since the last commit
                previous = wm
                if data.draw(st.booleans(), label="commit"):
                    t.mark_committed({TP: wm})
                    committed = wm
    final = t.watermark(TP)
    assert final == offsets[-1] + 1
    assert previous is None or final >= previous
    assert t.in_flight() == 0


def reference_watermark(tracked: list[int], unfinished: set[int]) -> int | None:
    """One past the last offset of the longest all-done prefix of ``tracked``."""
    last_done: int | None = None
    for offset in tracked:
        if offset in unfinished:
            break
        last_done = offset
    return None if last_done is None else last_done + 1


PARTITIONS: list[TopicPartition] = [("a", 0), ("a", 1), ("b", 0)]


class TrackerMachine(RuleBasedStateMachine):
    """Tracking, completions, commits, revokes and resets interleaved over several partitions."""

    def __init__(self) -> None:
        super().__init__()
        self.t = OffsetTracker()
        self.tracked: dict[TopicPartition, list[int]] = {tp: [] for tp in PARTITIONS}
        self.unfinished: dict[TopicPartition, set[int]] = {tp: set() for tp in PARTITIONS}
        self.committed: dict[TopicPartition, int] = {}
        self.next_offset: dict[TopicPartition, int] = dict.fromkeys(PARTITIONS, 0)
        self.weights: dict[tuple[TopicPartition, int], int] = {}

    def _forget(self, tp: TopicPartition) -> None:
        self.tracked[tp] = []
        self.unfinished[tp] = set()
        self.committed.pop(tp, None)

    @rule(
        tp=st.sampled_from(PARTITIONS),
        gap=st.integers(min_value=0, max_value=3),
        size=st.integers(min_value=0, max_value=5_000),
    )
    def track(self, tp: TopicPartition, gap: int, size: int) -> None:
        offset = self.next_offset[tp] + gap
        self.t.track(tp, offset, size)
        self.weights[(tp, offset)] = size
        self.tracked[tp].append(offset)
        self.unfinished[tp].add(offset)
        self.next_offset[tp] = offset + 1

    @precondition(lambda self: any(self.unfinished.values()))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from([tp for tp in PARTITIONS if self.unfinished[tp]]))
        offset = data.draw(st.sampled_from(sorted(self.unfinished[tp])))
        self.t.done(tp, offset)
        self.unfinished[tp].discard(offset)

    @precondition(lambda self: any(self.tracked[tp] for tp in PARTITIONS))
    @rule(data=st.data())
    def done_again(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from([tp for tp in PARTITIONS if self.tracked[tp]]))
        finished = [o for o in self.tracked[tp] if o not in self.unfinished[tp]]
        if finished:
            assert self.t.done(tp, data.draw(st.sampled_from(finished))) is False

    @rule()
    def look(self) -> None:
        self.check_committable(self.t.committable())

    @rule()
    def commit(self) -> None:
        offsets = self.t.committable()
        self.check_committable(offsets)
        self.t.mark_committed(offsets)
        self.committed.update(offsets)

    @rule(tps=st.lists(st.sampled_from(PARTITIONS), unique=True, max_size=2))
    def revoke(self, tps: list[TopicPartition]) -> None:
        final = self.t.revoke(tps)
        self.check_committable(final)
        assert set(final) <= set(tps)
        for tp in tps:
            self._forget(tp)

    @rule(tp=st.sampled_from(PARTITIONS), back=st.integers(min_value=0, max_value=5))
    def reset_and_seek(self, tp: TopicPartition, back: int) -> None:
        self.t.reset(tp)
        self._forget(tp)
        self.next_offset[tp] = max(0, self.next_offset[tp] - back)

    def check_committable(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, wm in offsets.items():
            unfinished = self.unfinished[tp]
            assert not unfinished or wm <= min(unfinished), "committable past unfinished work"
            assert wm > self.committed.get(tp, -1), "reported although not advanced"

    @invariant()
    def watermark_matches_the_reference(self) -> None:
        for tp in PARTITIONS:
            expected = reference_watermark(self.tracked[tp], self.unfinished[tp])
            assert self.t.watermark(tp) == expected
            if self.tracked[tp] and not self.unfinished[tp]:
                assert expected == self.tracked[tp][-1] + 1

    @invariant()
    def counts_match(self) -> None:
        for tp in PARTITIONS:
            assert self.t.pending(tp) == len(self.unfinished[tp])
        assert self.t.in_flight() == sum(len(u) for u in self.unfinished.values())

    @invariant()
    def held_bytes_are_the_unfinished_weights(self) -> None:
        held = sum(self.weights[(tp, o)] for tp in PARTITIONS for o in self.unfinished[tp])
        assert self.t.in_flight_bytes() == held

    @invariant()
    def committable_is_exactly_what_moved(self) -> None:
        expected = {}
        for tp in PARTITIONS:
            wm = reference_watermark(self.tracked[tp], self.unfinished[tp])
            if wm is not None and wm > self.committed.get(tp, -1):
                expected[tp] = wm
        assert self.t.committable() == expected


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
