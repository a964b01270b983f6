"""The in-flight window: two budgets (records, bytes), poll sizing, hysteresis, no deadlock."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rayml.executor.window
from rayml.executor.window import InFlightWindow

MIB = 1024**2


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.window).failed == 0


def test_the_record_budget_alone_behaves_as_before() -> None:
    w = InFlightWindow(max_records=100, max_bytes=1 << 40, first_guess_bytes=1_000)
    assert w.poll_limit(0, 0, most=2048) == 100
    assert w.poll_limit(60, 60_000, most=2048) == 40
    assert w.full(100, 100_000)
    assert not w.should_resume(51, 0)
    assert w.should_resume(50, 0)


def test_the_first_poll_assumes_records_as_large_as_a_request_may_be() -> None:
    w = InFlightWindow(max_records=20_000, max_bytes=32 * MIB, first_guess_bytes=2 * MIB)
    assert w.poll_limit(0, 0, most=2048) == 16


def test_resume_waits_for_both_budgets() -> None:
    w = InFlightWindow(max_records=100, max_bytes=10_000, first_guess_bytes=100)
    assert w.full(10, 10_000)
    assert not w.should_resume(10, 5_001), "bytes still above half"
    assert not w.should_resume(51, 0), "records still above half"
    assert w.should_resume(50, 5_000)


def test_a_record_larger_than_the_budget_is_taken_alone() -> None:
    w = InFlightWindow(max_records=100, max_bytes=1 * MIB, first_guess_bytes=1_000)
    w.observe(records=1, nbytes=50 * MIB)
    assert w.record_size == MIB, "the estimate is kept within the budget"
    assert w.poll_limit(0, 0, most=2048) == 1, "nothing held: one record, whatever its size"
    assert w.full(1, 50 * MIB)
    assert w.poll_limit(1, 50 * MIB, most=2048) == 0
    assert not w.should_resume(1, 50 * MIB)
    assert w.should_resume(0, 0)


def test_records_larger_than_half_the_budget_resume_only_with_room_for_one() -> None:
    w = InFlightWindow(max_records=100, max_bytes=10 * MIB, first_guess_bytes=6 * MIB)
    assert w.full(1, 6 * MIB)
    # Below half, but a record of the expected size does not fit: resuming would pause again.
    assert not w.should_resume(1, 4 * MIB + 1)
    assert w.should_resume(1, 4 * MIB)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"max_records": 0}, "max_in_flight"),
        ({"max_bytes": 0}, "max_in_flight"),
        ({"resume_ratio": 1.0}, "resume_ratio"),
        ({"smoothing": 0.0}, "smoothing"),
    ],
)
def test_bad_budgets_are_refused(bad: dict[str, float], message: str) -> None:
    options: dict[str, float] = {"max_records": 10, "max_bytes": 10, "first_guess_bytes": 1}
    with pytest.raises(ValueError, match=message):
        InFlightWindow(**{**options, **bad})  # type: ignore[arg-type]


@given(
    size=st.integers(min_value=1, max_value=4 * MIB),
    budget=st.integers(min_value=1_024, max_value=256 * MIB),
    guess_above=st.integers(min_value=0, max_value=4 * MIB),
    most=st.integers(min_value=1, max_value=4096),
    turns=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=60),
)
def test_records_of_one_size_stay_within_the_budget_and_never_deadlock(
    size: int, budget: int, guess_above: int, most: int, turns: list[int]
) -> None:
    """The loop as the ingest runs it: poll what the window allows, finish some records.

    The first guess is the largest request accepted (executor.max_request_bytes), so at or
    above the records' size; from there the estimate only falls toward the true size.
    """
    w = InFlightWindow(max_records=10_000, max_bytes=budget, first_guess_bytes=size + guess_above)
    held = 0
    paused = False
    for finished in turns:
        if not paused and w.full(held, held * size):
            paused = True
        elif paused and w.should_resume(held, held * size):
            paused = False
        if not paused:
            n = w.poll_limit(held, held * size, most)
            assert n >= 1, "not paused means room for a record"
            held += n
            w.observe(n, n * size)
            # Within the budget; a record larger than the whole budget runs alone.
            assert held * size <= max(budget, size)
            assert held == 1 or held * size <= budget
        held -= min(held, finished)
    # Once nothing is held, a poll always takes something: no deadlock.
    assert w.poll_limit(0, 0, most) >= 1
