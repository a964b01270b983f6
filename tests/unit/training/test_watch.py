"""The trial clock's rules (time bounds from the start, waiting notices) and what a notice says."""

from __future__ import annotations

from rayml.training.watch import TrialClock, needs_of, waiting_message


def test_the_bound_counts_from_the_start_not_from_the_launch() -> None:
    clock: TrialClock[str] = TrialClock(notice_s=5.0)
    clock.launched("a", now=0.0, bound_s=10.0)
    # Waiting for resources for far longer than the bound: not overdue, it has not started.
    assert clock.overdue(now=1_000.0) == []
    assert clock.started("a", now=1_000.0) == 1_000.0
    assert clock.overdue(now=1_010.0) == []  # exactly the bound: not past it
    assert clock.overdue(now=1_010.01) == ["a"]
    assert clock.bound_of("a") == 10.0


def test_no_bound_never_overdue_and_forgotten_tasks_are_gone() -> None:
    clock: TrialClock[str] = TrialClock(notice_s=5.0)
    clock.launched("free", now=0.0, bound_s=None)
    clock.launched("bound", now=0.0, bound_s=1.0)
    clock.started("free", now=0.0)
    clock.started("bound", now=0.0)
    assert clock.overdue(now=1e9) == ["bound"]
    clock.forget("bound")
    assert clock.overdue(now=1e9) == []
    assert len(clock) == 1
    assert clock.started("gone", now=1.0) is None  # unknown keys are ignored
    assert clock.started("free", now=2.0) is None  # a second start changes nothing


def test_a_notice_is_due_after_the_interval_and_repeats_while_the_task_waits() -> None:
    clock: TrialClock[str] = TrialClock(notice_s=5.0)
    clock.launched("a", now=0.0, bound_s=60.0)
    clock.launched("b", now=3.0, bound_s=60.0)
    assert clock.notices_due(now=4.9) == []
    assert clock.notices_due(now=5.0) == [("a", 5.0)]
    assert clock.notices_due(now=5.0) == []  # once per interval, not per look
    assert clock.notices_due(now=8.0) == [("b", 5.0)]
    assert clock.notices_due(now=10.0) == [("a", 10.0)]
    assert clock.waiting_since("a") == 0.0
    clock.started("a", now=11.0)
    assert clock.waiting_since("a") is None
    assert clock.notices_due(now=100.0) == [("b", 97.0)]  # a started: no more notices


def test_waiting_message_says_what_is_short() -> None:
    assert waiting_message({"CPU": 1.0}, {}, {"CPU": 2.0}) == (
        "waiting for resources: needs {'CPU': 1.0}; the cluster has {'CPU': 0.0} free of "
        "{'CPU': 2.0}"
    )
    gpu = needs_of(0.5, 1, None)
    assert waiting_message(gpu, {"CPU": 3.0}, {"CPU": 4.0}) == (
        "waiting for resources: needs {'CPU': 0.5, 'GPU': 1.0}; the cluster has "
        "{'CPU': 3.0, 'GPU': 0.0} free of {'CPU': 4.0, 'GPU': 0.0}"
    )
    # Enough free in total (spread over nodes, or a worker process starting): not "short".
    assert waiting_message({"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 2.0}).startswith(
        "waiting to start: "
    )
