"""Micro-batching (full or timed out, per route) and the backpressure hysteresis."""

from __future__ import annotations

import doctest
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rayml.executor.batching
from rayml.executor.batching import Backpressure, Batch, MicroBatcher

Route = tuple[str, str | None]
IRIS: Route = ("iris.predict", None)
IRIS_V2: Route = ("iris.predict", "2")


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.batching).failed == 0


# --- MicroBatcher examples -----------------------------------------------------------------


def test_a_full_batch_leaves_at_once() -> None:
    b = MicroBatcher[Route, int](max_size=3, max_wait_s=1.0)
    assert b.add(IRIS, 1, now=0.0) == []
    assert b.add(IRIS, 2, now=0.1) == []
    assert len(b) == 2
    assert b.add(IRIS, 3, now=0.2) == [Batch(IRIS, [1, 2, 3], 0.0)]
    assert len(b) == 0
    assert b.next_deadline() is None


def test_routes_are_batched_separately() -> None:
    b = MicroBatcher[Route, str](max_size=2, max_wait_s=1.0)
    b.add(IRIS, "a", now=0.0)
    b.add(IRIS_V2, "b", now=0.0)
    assert [batch.key for batch in b.add(IRIS_V2, "c", now=0.5)] == [IRIS_V2]
    assert len(b) == 1
    assert b.flush() == [Batch(IRIS, ["a"], 0.0)]


def test_a_batch_falls_due_after_max_wait_of_its_oldest_item() -> None:
    b = MicroBatcher[Route, int](max_size=10, max_wait_s=0.005)
    b.add(IRIS, 1, now=10.0)
    b.add(IRIS, 2, now=10.004)  # a later item does not extend the wait
    assert b.next_deadline() == pytest.approx(10.005)
    assert b.due(now=10.0049) == []
    assert b.due(now=10.005) == [Batch(IRIS, [1, 2], 10.0)]
    assert b.due(now=99.0) == []
    assert len(b) == 0


def test_due_returns_batches_oldest_first_and_keeps_younger_ones() -> None:
    b = MicroBatcher[str, int](max_size=10, max_wait_s=1.0)
    b.add("a", 1, now=0.0)
    b.add("b", 2, now=0.5)
    b.add("c", 3, now=2.0)
    assert [batch.key for batch in b.due(now=1.5)] == ["a", "b"]
    assert b.next_deadline() == 3.0
    assert len(b) == 1


def test_a_route_reopens_after_its_batch_left() -> None:
    b = MicroBatcher[str, int](max_size=2, max_wait_s=1.0)
    b.add("a", 1, now=0.0)
    b.add("b", 2, now=0.1)
    b.add("a", 3, now=0.2)  # fills and emits "a"
    b.add("a", 4, now=0.3)  # new "a" batch, now younger than "b"
    assert b.next_deadline() == pytest.approx(1.1)
    assert [batch.items for batch in b.due(now=1.2)] == [[2]]
    assert [batch.items for batch in b.flush()] == [[4]]


def test_sleeping_until_next_deadline_always_finds_a_batch_due() -> None:
    # Float rounding must not make the poll loop wake up to an empty due() and spin.
    b = MicroBatcher[str, int](max_size=10, max_wait_s=0.1)
    for now in (0.1, 0.2, 0.3, 1e9 + 0.7, 1 / 3):
        b.add("k", 1, now=now)
        deadline = b.next_deadline()
        assert deadline is not None
        assert len(b.due(now=deadline)) == 1


def test_zero_wait_makes_every_batch_due_at_once() -> None:
    b = MicroBatcher[str, int](max_size=10, max_wait_s=0.0)
    b.add("k", 1, now=5.0)
    assert b.next_deadline() == 5.0
    assert [batch.items for batch in b.due(now=5.0)] == [[1]]


def test_max_size_one_emits_every_item() -> None:
    b = MicroBatcher[str, int](max_size=1, max_wait_s=1.0)
    assert b.add("k", 1, now=0.0) == [Batch("k", [1], 0.0)]
    assert len(b) == 0


@pytest.mark.parametrize(
    ("max_size", "max_wait_s"), [(0, 1.0), (-1, 1.0), (1, -0.1), (1, math.nan)]
)
def test_invalid_settings_are_refused(max_size: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        MicroBatcher[str, int](max_size=max_size, max_wait_s=max_wait_s)


def test_settings_are_readable() -> None:
    b = MicroBatcher[str, int](max_size=7, max_wait_s=0.25)
    assert (b.max_size, b.max_wait_s) == (7, 0.25)


# --- MicroBatcher properties ---------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from("abc"), st.floats(0, 0.02)),
        st.tuples(st.just("due"), st.just(""), st.floats(0, 0.05)),
        st.tuples(st.just("flush"), st.just(""), st.just(0.0)),
    ),
    max_size=80,
)


@given(
    max_size=st.integers(min_value=1, max_value=5),
    max_wait_s=st.sampled_from([0.0, 0.01, 0.05]),
    ops=operations,
)
def test_no_item_is_lost_duplicated_or_reordered(
    max_size: int, max_wait_s: float, ops: list[tuple[str, str, float]]
) -> None:
    b = MicroBatcher[str, int](max_size=max_size, max_wait_s=max_wait_s)
    now = 0.0
    added: list[tuple[str, int]] = []
    emitted: list[Batch[str, int]] = []
    for n, (op, key, step) in enumerate(ops):
        now += step  # the caller's clock never goes back
        if op == "add":
            added.append((key, n))
            out = b.add(key, n, now=now)
            assert all(len(batch.items) == max_size for batch in out)  # add only emits full ones
        elif op == "due":
            out = b.due(now=now)
            for batch in out:
                assert now >= batch.opened_at + max_wait_s
            deadline = b.next_deadline()
            assert deadline is None or deadline > now  # nothing due was left behind
        else:
            out = b.flush()
            assert len(b) == 0
        emitted.extend(out)
        assert len(b) == len(added) - sum(len(batch.items) for batch in emitted)
        assert (b.next_deadline() is None) == (len(b) == 0)
    emitted.extend(b.flush())

    for batch in emitted:
        assert 1 <= len(batch.items) <= max_size
    # Exactly the items added, each once, and per key in arrival order.
    assert Counter((batch.key, item) for batch in emitted for item in batch.items) == Counter(added)
    for key in "abc":
        per_key = [item for batch in emitted if batch.key == key for item in batch.items]
        assert per_key == [item for k, item in added if k == key]


# --- Backpressure --------------------------------------------------------------------------


def test_backpressure_pauses_at_the_maximum_and_resumes_at_the_ratio() -> None:
    bp = Backpressure(max_in_flight=1000, resume_ratio=0.25)
    assert (bp.max_in_flight, bp.resume_at) == (1000, 250.0)
    assert not bp.should_pause(999)
    assert bp.should_pause(1000)
    assert bp.should_pause(5000)
    assert not bp.should_resume(999)
    assert not bp.should_resume(251)
    assert bp.should_resume(250)
    assert bp.should_resume(0)


def test_backpressure_default_ratio_is_half() -> None:
    bp = Backpressure(max_in_flight=10)
    assert (bp.should_resume(6), bp.should_resume(5)) == (False, True)


@pytest.mark.parametrize(
    ("max_in_flight", "ratio"), [(0, 0.5), (10, 1.0), (10, -0.1), (10, 1.5), (10, math.nan)]
)
def test_backpressure_refuses_settings_without_hysteresis(max_in_flight: int, ratio: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Backpressure(max_in_flight, ratio)


@given(
    max_in_flight=st.integers(min_value=1, max_value=10_000),
    ratio=st.floats(min_value=0, max_value=1, exclude_max=True),
    in_flight=st.integers(min_value=0, max_value=20_000),
)
def test_backpressure_never_says_pause_and_resume_at_once(
    max_in_flight: int, ratio: float, in_flight: int
) -> None:
    bp = Backpressure(max_in_flight, ratio)
    assert not (bp.should_pause(in_flight) and bp.should_resume(in_flight))


def test_a_key_with_limits_of_its_own_fills_and_falls_due_by_them() -> None:
    own = {"gpu": (3, 0.050), "wait_only": (None, 0.001)}
    b = MicroBatcher[str, int](max_size=10, max_wait_s=0.005, limits_of=own.get)
    assert b.add("gpu", 1, now=0.0) == []
    assert b.add("gpu", 2, now=0.0) == []
    assert [x.items for x in b.add("gpu", 3, now=0.0)] == [[1, 2, 3]]  # its own size: 3
    b.add("gpu", 4, now=1.0)
    b.add("cpu", 5, now=1.0)
    b.add("wait_only", 6, now=1.0)
    assert b.next_deadline() == pytest.approx(1.001)
    assert [x.key for x in b.due(now=1.001)] == ["wait_only"]
    assert [x.key for x in b.due(now=1.005)] == ["cpu"]  # the batcher's own wait
    assert b.due(now=1.049) == []
    assert [x.items for x in b.due(now=1.050)] == [[4]]  # its own wait: 50 ms
    assert len(b) == 0
    assert b.next_deadline() is None


def test_limits_are_asked_once_per_batch_not_per_item() -> None:
    asked: list[str] = []

    def limits(key: str) -> tuple[int | None, float | None] | None:
        asked.append(key)
        return None

    b = MicroBatcher[str, int](max_size=100, max_wait_s=0.005, limits_of=limits)
    for n in range(50):
        b.add("k", n, now=0.0)
    assert asked == ["k"]
    assert [len(x.items) for x in b.flush()] == [50]


def test_flush_of_some_keys_leaves_the_others_filling() -> None:
    b = MicroBatcher[str, int](max_size=10, max_wait_s=0.005)
    b.add("idle-pool", 1, now=0.0)
    b.add("busy-pool", 2, now=0.0)
    b.add("idle-pool", 3, now=0.001)
    assert [(x.key, x.items) for x in b.flush(lambda key: key == "idle-pool")] == [
        ("idle-pool", [1, 3])
    ]
    assert len(b) == 1
    assert [(x.key, x.items) for x in b.due(now=0.005)] == [("busy-pool", [2])]
