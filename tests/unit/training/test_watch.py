"""The trial clock's rules (time bounds from the start, waiting notices, the bound on waiting),
what a notice says, and when a trial can never start on the cluster's nodes."""

from __future__ import annotations

from rayml.training.watch import (
    TrialClock,
    largest_node,
    needs_of,
    unplaceable,
    waiting_message,
)


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


def test_a_task_waiting_past_max_wait_s_is_reported_until_it_starts_or_is_forgotten() -> None:
    clock: TrialClock[str] = TrialClock(notice_s=5.0, max_wait_s=30.0)
    clock.launched("waits", now=0.0, bound_s=10.0)
    clock.launched("starts", now=0.0, bound_s=10.0)
    clock.launched("later", now=20.0, bound_s=10.0)
    clock.started("starts", now=29.0)
    assert clock.overwaited(now=30.0) == []  # exactly the bound: not past it
    assert clock.overwaited(now=30.5) == [("waits", 30.5)]  # a started task never is
    assert clock.overwaited(now=50.5) == [("waits", 50.5), ("later", 30.5)]
    clock.forget("waits")
    assert clock.overwaited(now=1e9) == [("later", 1e9 - 20.0)]
    assert clock.overdue(now=39.5) == ["starts"]  # the wait is not charged to the bound


def test_no_max_wait_means_waiting_for_ever() -> None:
    clock: TrialClock[str] = TrialClock(notice_s=5.0)
    clock.launched("a", now=0.0, bound_s=None)
    assert clock.max_wait_s is None
    assert clock.overwaited(now=1e12) == []


def test_a_trial_that_no_node_can_hold_is_unplaceable_naming_the_largest_node() -> None:
    two_cpus = {"CPU": 2.0, "memory": 8e9, "object_store_memory": 2e9}
    assert unplaceable(needs_of(64, 0, None), [two_cpus, {"CPU": 1.0}]) == (
        "needs {'CPU': 64.0}, more than any node of the cluster has (the largest has {'CPU': 2.0})"
    )
    # Totals, not what is free: a node that has it at all can run it later.
    assert unplaceable(needs_of(2, 0, None), [two_cpus]) is None
    assert unplaceable(needs_of(0.25, 0, None), [two_cpus]) is None
    # Each resource on one node: enough CPUs on one, the GPU on another, fits on neither.
    nodes = [{"CPU": 16.0}, {"CPU": 2.0, "GPU": 1.0}]
    assert unplaceable(needs_of(4, 1, None), nodes) == (
        "needs {'CPU': 4.0, 'GPU': 1.0}, more than any node of the cluster has "
        "(the largest has {'CPU': 2.0, 'GPU': 1.0})"
    )
    assert unplaceable(needs_of(2, 1, None), nodes) is None
    assert unplaceable(needs_of(1, 0, 16 * 2**30), [two_cpus]) == (
        "needs {'CPU': 1.0, 'memory': 17179869184.0}, more than any node of the cluster has "
        "(the largest has {'CPU': 2.0, 'memory': 8000000000.0})"
    )


def test_an_unknown_cluster_decides_nothing() -> None:
    assert unplaceable(needs_of(64, 8, None), []) is None
    assert largest_node({"CPU": 1.0}, []) == {}


def test_the_largest_node_is_the_one_closest_to_the_need() -> None:
    needs = {"CPU": 8.0, "GPU": 2.0}
    nodes = [{"CPU": 64.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}]
    # Half of each on the second; the first has no GPU at all.
    assert largest_node(needs, nodes) == {"CPU": 4.0, "GPU": 1.0}
    # Ties on the scarcest share: the one with more in all.
    assert largest_node({"CPU": 8.0}, [{"CPU": 2.0}, {"CPU": 4.0}]) == {"CPU": 4.0}
