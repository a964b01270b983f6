"""ServingWatch: leave the group only after the grace period without a worker; rejoin at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayml.executor.membership import ServingWatch


def test_a_starting_pool_keeps_its_partitions_within_the_grace_period() -> None:
    watch = ServingWatch(leave_after_s=30.0, now=100.0)
    assert watch.update(0, 129.9) is None
    assert watch.in_group
    assert watch.update(2, 131.0) is None  # workers came up in time: nothing to change
    assert watch.in_group


def test_leaves_once_then_rejoins_once_a_worker_serves() -> None:
    watch = ServingWatch(leave_after_s=5.0, now=0.0)
    assert watch.update(0, 5.0) == "leave"
    assert not watch.in_group
    assert watch.update(0, 50.0) is None  # already out
    assert watch.update(1, 60.0) == "join"
    assert watch.in_group
    assert watch.update(1, 61.0) is None


def test_the_grace_period_restarts_when_the_last_worker_goes() -> None:
    watch = ServingWatch(leave_after_s=5.0, now=0.0)
    assert watch.update(2, 1.0) is None
    assert watch.update(0, 10.0) is None  # the pool lost its workers just now
    assert watch.unserved_for(12.0) == pytest.approx(2.0)
    assert watch.update(0, 14.9) is None
    assert watch.update(0, 15.0) == "leave"


def test_zero_never_leaves() -> None:
    watch = ServingWatch(leave_after_s=0.0, now=0.0)
    assert watch.update(0, 1e9) is None
    assert watch.in_group


def test_a_negative_grace_period_is_refused() -> None:
    with pytest.raises(ValueError, match="leave_after_s"):
        ServingWatch(leave_after_s=-1.0, now=0.0)


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 10)), max_size=50))
def test_changes_alternate_and_match_membership(steps: list[tuple[int, float]]) -> None:
    watch = ServingWatch(leave_after_s=3.0, now=0.0)
    now, last = 0.0, "join"
    for serving, dt in steps:
        now += dt
        change = watch.update(serving, now)
        if change is not None:
            assert change != last, "leave and join alternate"
            last = change
        assert watch.in_group == (last == "join")
        if serving > 0:
            assert watch.in_group, "a pool with a serving worker is always in the group"
