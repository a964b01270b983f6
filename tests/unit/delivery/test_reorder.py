"""Reorder buffers: released in offset order, never past an unfinished record, nothing twice."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rayml.delivery.reorder
from rayml.delivery.reorder import ReorderBuffer
from rayml.kafka.partitions import TP as TopicPartition

TP: TopicPartition = ("ml.pipeline.input", 0)
TP1: TopicPartition = ("ml.pipeline.input", 1)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.delivery.reorder).failed == 0


def buffer(*offsets: int, tp: TopicPartition = TP) -> ReorderBuffer[str]:
    buf: ReorderBuffer[str] = ReorderBuffer()
    for offset in offsets:
        buf.track(tp, offset)
    return buf


def test_a_record_finished_early_is_held_until_the_ones_before_it_finish() -> None:
    buf = buffer(10, 11, 12)
    assert buf.finish(TP, 12, "c") == []
    assert buf.finish(TP, 11, "b") == []
    assert buf.next_offset(TP) is None
    assert buf.in_flight() == 3
    assert buf.finish(TP, 10, "a") == [(10, "a"), (11, "b"), (12, "c")]
    assert buf.next_offset(TP) == 13
    assert buf.in_flight() == 0


def test_the_offset_to_commit_stops_at_the_first_unfinished_record() -> None:
    # The case that breaks exactly-once without a reorder buffer: 10 and 12 finished, 11 not.
    buf = buffer(10, 11, 12)
    assert buf.finish(TP, 10, "a") == [(10, "a")]
    assert buf.finish(TP, 12, "c") == []
    assert buf.next_offset(TP) == 11  # 12's result is not released, so not in the transaction
    assert buf.pending(TP) == 2


def test_gaps_between_tracked_offsets_do_not_hold_anything_back() -> None:
    # Transaction markers and compacted records are never polled, never tracked.
    buf = buffer(5, 8, 20)
    assert buf.finish(TP, 5, "a") == [(5, "a")]
    assert buf.finish(TP, 8, "b") == [(8, "b")]
    assert buf.next_offset(TP) == 9


def test_partitions_are_independent() -> None:
    buf = buffer(0, 1)
    buf.track(TP1, 7)
    assert buf.finish(TP1, 7, "x") == [(7, "x")]
    assert buf.finish(TP, 1, "b") == []
    assert (buf.next_offset(TP), buf.next_offset(TP1)) == (None, 8)
    assert buf.in_flight() == 2


def test_a_second_finish_is_ignored_and_the_first_item_wins() -> None:
    buf = buffer(0, 1)
    assert buf.finish(TP, 1, "first") == []
    assert buf.finish(TP, 1, "second") == []
    assert buf.finish(TP, 0, "a") == [(0, "a"), (1, "first")]
    assert buf.finish(TP, 0, "again") == []  # released before
    assert buf.in_flight() == 0


def test_untracked_offsets_and_partitions_raise_key_error() -> None:
    buf = buffer(5)
    with pytest.raises(KeyError):
        buf.finish(TP, 6, "x")
    with pytest.raises(KeyError):
        buf.finish(TP, 4, "x")  # below the first tracked offset: never seen
    with pytest.raises(KeyError):
        buf.finish(TP1, 0, "x")


def test_offsets_must_be_tracked_in_increasing_order() -> None:
    buf = buffer(5)
    with pytest.raises(ValueError, match="reset the partition"):
        buf.track(TP, 5)
    with pytest.raises(ValueError, match="negative"):
        buffer().track(TP, -1)


def test_forget_drops_held_items_and_a_late_finish_raises() -> None:
    buf = buffer(0, 1, 2)
    buf.finish(TP, 2, "c")
    buf.forget([TP, TP1])
    assert buf.in_flight() == 0
    assert buf.pending(TP) == 0
    with pytest.raises(KeyError):
        buf.finish(TP, 0, "late")
    # Rewound: the partition is tracked afresh from a lower offset.
    buf.track(TP, 0)
    assert buf.finish(TP, 0, "again") == [(0, "again")]


def test_none_is_a_valid_item() -> None:
    buf: ReorderBuffer[None] = ReorderBuffer()
    buf.track(TP, 0)
    assert buf.finish(TP, 0, None) == [(0, None)]


# --- properties ----------------------------------------------------------------------------


@st.composite
def tracked_and_finish_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(1, 4), min_size=1, max_size=60))
    offsets, at = [], draw(st.integers(0, 100))
    for gap in gaps:
        offsets.append(at)
        at += gap
    finish = draw(st.permutations(offsets))
    # Some records are reported twice (a re-dispatched or stale batch).
    repeats = draw(st.lists(st.sampled_from(offsets), max_size=10))
    return offsets, [*finish, *repeats]


@given(tracked_and_finish_order())
def test_release_is_in_offset_order_never_past_an_unfinished_record_and_complete(
    case: tuple[list[int], list[int]],
) -> None:
    offsets, order = case
    buf = buffer(*offsets)
    released: list[int] = []
    finished: set[int] = set()
    for offset in order:
        out = buf.finish(TP, offset, f"item-{offset}")
        finished.add(offset)
        for off, item in out:
            assert item == f"item-{off}"
        released += [off for off, _ in out]
        # Never past an unfinished record: everything released was finished, and so was
        # every tracked offset before it.
        if released:
            assert all(o in finished for o in offsets if o <= released[-1])
            assert buf.next_offset(TP) == released[-1] + 1
        # Released as much as allowed: the next tracked record is unfinished.
        rest = [o for o in offsets if o not in released]
        if rest:
            assert rest[0] not in finished
        assert buf.in_flight() == len(rest) == buf.pending(TP)
    assert released == offsets  # each exactly once, in order
    assert buf.next_offset(TP) == offsets[-1] + 1
